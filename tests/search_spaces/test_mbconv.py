from __future__ import annotations

import json
from collections.abc import Callable

import optuna
import pytest
import torch

from search_spaces import Arch, UnknownSpaceError, arch_hash, get_space, list_spaces

Sampler = Callable[..., list[Arch]]


def test_registry_lists_mbconv_and_rejects_unknown_names() -> None:
    assert "mbconv" in list_spaces()
    with pytest.raises(UnknownSpaceError, match="Unknown search space 'nope'; known spaces: .*mbconv"):
        get_space("nope")


def test_sampled_arch_is_json_serialisable_and_hash_is_stable(sampled_archs: Sampler) -> None:
    arch = sampled_archs("mbconv", 1)[0]
    assert json.loads(json.dumps(arch)) == arch
    reordered = dict(reversed(list(arch.items())))
    assert arch_hash(reordered) == arch_hash(arch)
    assert len(arch_hash(arch)) == 12
    other = {**arch, "head": arch["head"] + 1}
    assert arch_hash(other) != arch_hash(arch)


def test_fixed_trial_reproduces_an_arch_from_its_params() -> None:
    space = get_space("mbconv")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    arch = space.sample(trial)
    assert space.sample(optuna.trial.FixedTrial(trial.params)) == arch


@pytest.mark.parametrize("input_shape, num_classes", [((1, 8, 8), 10), ((3, 32, 32), 7), ((1, 28, 28), 2), ((3, 96, 80), 5)])
def test_build_maps_any_image_shape_to_class_logits(input_shape: tuple[int, int, int], num_classes: int,
                                                     sampled_archs: Sampler) -> None:
    space = get_space("mbconv")
    for arch in [space.smallest(), space.largest(), *sampled_archs("mbconv", 2)]:
        model = space.build(arch, input_shape, num_classes).eval()
        assert isinstance(model, torch.nn.Module)
        assert model(torch.randn(3, *input_shape)).shape == (3, num_classes)


def test_arch_choices_change_the_module() -> None:
    space = get_space("mbconv")
    arch = space.smallest()
    deeper = {**arch, "stages": [{**arch["stages"][0], "depth": 3, "se": True, "kernel": 7}, *arch["stages"][1:]]}
    small = space.build(arch, (1, 8, 8), 10)
    large = space.build(deeper, (1, 8, 8), 10)
    assert len(large.stages[0]) == 3 and len(small.stages[0]) == 1
    assert large.stages[0][0].body[0][0].kernel_size == (7, 7)  # expand 1: depthwise first
    assert sum(p.numel() for p in large.parameters()) > sum(p.numel() for p in small.parameters())


def test_smallest_and_largest_bracket_every_sampled_arch(sampled_archs: Sampler) -> None:
    space = get_space("mbconv")
    count = lambda arch: sum(p.numel() for p in space.build(arch, (1, 8, 8), 10).parameters())  # noqa: E731
    smallest, largest = count(space.smallest()), count(space.largest())
    assert all(smallest <= count(arch) <= largest for arch in sampled_archs("mbconv", 20))
    assert largest > 20 * smallest
