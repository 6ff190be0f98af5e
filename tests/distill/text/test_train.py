from __future__ import annotations

from pathlib import Path

import pytest
import torch

import distill
from search_spaces import get_space
from tests.conftest import TINY_HIDDEN


def test_short_distillation_improves_fidelity(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                                              tiny_outputs: distill.TextTeacherOutputs) -> None:
    arch = {"layers": 2, "hidden": 64, "heads": 2, "ffn_ratio": 2, "embed": 32}
    space = get_space("transformer")
    torch.manual_seed(0)
    student = space.build(arch, (32,), tiny_teacher.hidden_size, vocab_size=tiny_teacher.vocab_size)
    before = distill.text_fidelity(distill.embed_texts(student, tiny_text.ids_val, tiny_text.mask_val),
                                   tiny_outputs.val)
    result = distill.distill_text(student, tiny_text, tiny_outputs, distill.TextDistillConfig(steps=40, lr=3e-3))
    assert result.steps == 40 and set(result.final_losses) == {"cosine", "hidden", "attention"}
    assert result.cosine > before.cosine + 0.2, (before, result)
    assert result.to_dict()["neighbour_agreement"] == result.neighbour_agreement


def test_distill_text_checks_its_inputs(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                                        tmp_path: Path) -> None:
    outputs = distill.text_teacher_outputs(tiny_teacher, tiny_text, tmp_path, layers=[2])
    student = get_space("transformer").build({"layers": 2, "hidden": 64, "heads": 2, "ffn_ratio": 1, "embed": 64},
                                             (32,), TINY_HIDDEN, vocab_size=tiny_teacher.vocab_size)
    config = distill.TextDistillConfig(steps=1)
    with pytest.raises(ValueError, match=r"reads teacher layers \[1\], but the teacher outputs hold layers \[2\]"):
        distill.distill_text(student, tiny_text, outputs, config)  # uniform map of 2 onto 3 layers: [1, 2]
    with pytest.raises(ValueError, match="one teacher layer per student layer"):
        distill.distill_text(student, tiny_text, outputs, config, layer_map=[2])
    with pytest.raises(ValueError, match="subset of"):
        distill.distill_text(student, tiny_text, outputs, config, losses=("kd",))
    result = distill.distill_text(student, tiny_text, outputs, config, layer_map=[2, 2])
    assert result.steps == 1
    assert distill.distill_text(student, tiny_text, outputs, config, losses=("cosine",)).steps == 1


def _student(tiny_teacher: distill.HFTeacher, embed: int) -> torch.nn.Module:
    arch = {"layers": 1, "hidden": TINY_HIDDEN, "heads": 2, "ffn_ratio": 1, "embed": embed}
    return get_space("transformer").build(arch, (24,), TINY_HIDDEN, vocab_size=tiny_teacher.vocab_size)


def test_students_start_from_the_teachers_embedding_tables(tiny_teacher: distill.HFTeacher) -> None:
    tokens, positions = tiny_teacher.input_embeddings()
    basis = distill.principal_basis(tokens)
    full = _student(tiny_teacher, TINY_HIDDEN)
    distill.init_from_teacher(full, tokens, positions, basis)
    # At the teacher's width the projection is a rotation: every distance between tokens is kept.
    torch.testing.assert_close(torch.cdist(full.tokens.weight[:60], full.tokens.weight[:60]),
                               torch.cdist(tokens[:60], tokens[:60]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cdist(full.positions.weight, full.positions.weight),
                               torch.cdist(positions[:24], positions[:24]), atol=1e-4, rtol=1e-4)
    narrow = _student(tiny_teacher, TINY_HIDDEN // 4)
    distill.init_from_teacher(narrow, tokens, positions, basis)
    # Narrower: the top principal directions keep more of the tables' variance than a random projection.
    generator = torch.Generator().manual_seed(0)
    random_basis = torch.linalg.qr(torch.randn(TINY_HIDDEN, TINY_HIDDEN // 4, generator=generator))[0]
    assert narrow.tokens.weight.var(0).sum() > ((tokens - tokens.mean(0)) @ random_basis).var(0).sum()
    # Wider than the teacher: the rotated table fills the first columns, the rest keep their random start.
    wide = _student(tiny_teacher, TINY_HIDDEN)
    start = wide.tokens.weight[:, 8:].clone()
    distill.init_from_teacher(wide, tokens[:, :8], None, distill.principal_basis(tokens[:, :8]))
    torch.testing.assert_close(torch.cdist(wide.tokens.weight[:60, :8], wide.tokens.weight[:60, :8]),
                               torch.cdist(tokens[:60, :8], tokens[:60, :8]), atol=1e-4, rtol=1e-4)
    assert torch.equal(wide.tokens.weight[:, 8:], start)
