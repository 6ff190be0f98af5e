from __future__ import annotations

import torch

from search_spaces import arch_hash, get_space, seeded_build


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_seeded_build_seeds_torch_with_the_seed_plus_the_arch_hash() -> None:
    space = get_space("resnet")
    arch = space.smallest()
    built = _weights(seeded_build(space, arch, 7, (1, 8, 8), 10))
    torch.manual_seed(7 + int(arch_hash(arch), 16) % 2**31)  # the rule every search and benchmark relies on
    assert _same(built, _weights(space.build(arch, (1, 8, 8), 10)))
    torch.manual_seed(123)  # whatever ran before does not matter
    assert _same(built, _weights(seeded_build(space, arch, 7, (1, 8, 8), 10)))
    assert not _same(built, _weights(seeded_build(space, arch, 8, (1, 8, 8), 10)))


def test_seeded_build_passes_keyword_arguments_and_differs_between_archs() -> None:
    space = get_space("transformer")
    small, large = space.smallest(), {**space.smallest(), "embed": 32}
    one = seeded_build(space, small, 0, (16,), 8, vocab_size=50)
    assert one.tokens.num_embeddings == 50
    assert not torch.equal(one.head.weight, seeded_build(space, large, 0, (16,), 8, vocab_size=50).head.weight)
