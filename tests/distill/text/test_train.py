from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import distill
from search_spaces import get_space
from search_spaces.transformer import TextStudent
from tests.conftest import TINY_HEADS, TINY_HIDDEN, TINY_LAYERS


def test_short_distillation_improves_fidelity(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                                              tiny_outputs: distill.TextTeacherOutputs) -> None:
    arch = {"layers": 2, "hidden": 64, "heads": 2, "ffn_ratio": 2, "embed": 32}
    space = get_space("transformer")
    torch.manual_seed(0)
    student = space.build(arch, (32,), tiny_teacher.hidden_size, vocab_size=tiny_teacher.vocab_size)
    before = distill.text_fidelity(distill.embed_texts(student, tiny_text.ids_val, tiny_text.mask_val),
                                   tiny_outputs.val)
    result = distill.distill_text(student, tiny_text, tiny_outputs, distill.TextDistillConfig(steps=40, lr=3e-3))
    assert result.steps == 40 and set(result.final_losses) == {"cosine", "hidden", "attention", "similarity"}
    assert result.cosine > before.cosine + 0.2, (before, result)
    assert result.to_dict()["neighbour_agreement"] == result.neighbour_agreement


def test_the_similarity_term_trains_the_student_by_its_weight(tiny_teacher: distill.HFTeacher,
                                                              tiny_text: distill.TextData,
                                                              tiny_outputs: distill.TextTeacherOutputs) -> None:
    """At weight 0 the term changes nothing (the same student as the cosine term alone); at weight 1 it does."""
    def trained(losses: tuple[str, ...], weight: float) -> np.ndarray:
        torch.manual_seed(0)
        student = get_space("transformer").build({"layers": 1, "hidden": 64, "heads": 2, "ffn_ratio": 2, "embed": 32},
                                                 (32,), tiny_teacher.hidden_size, vocab_size=tiny_teacher.vocab_size)
        config = distill.TextDistillConfig(steps=10, lr=3e-3, similarity_weight=weight)
        result = distill.distill_text(student, tiny_text, tiny_outputs, config, losses=losses)
        assert set(result.final_losses) == set(losses) and all(map(math.isfinite, result.final_losses.values()))
        return distill.embed_texts(student, tiny_text.ids_val, tiny_text.mask_val)

    cosine_only = trained(("cosine",), 1.0)
    np.testing.assert_array_equal(trained(("cosine", "similarity"), 0.0), cosine_only)
    assert np.abs(trained(("cosine", "similarity"), 1.0) - cosine_only).max() > 1e-4
    with pytest.raises(ValueError, match="similarity_temperature > 0"):
        distill.TextDistillConfig(similarity_temperature=0.0)


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


def _student(tiny_teacher: distill.HFTeacher, **arch: int) -> torch.nn.Module:
    arch = {"layers": 1, "hidden": TINY_HIDDEN, "heads": 2, "ffn_ratio": 1, "embed": TINY_HIDDEN, **arch}
    torch.manual_seed(0)
    return TextStudent(arch, 24, TINY_HIDDEN, tiny_teacher.vocab_size)


def _fidelity(student: torch.nn.Module, tiny_text: distill.TextData,
              tiny_outputs: distill.TextTeacherOutputs) -> distill.TextFidelity:
    return distill.text_fidelity(distill.embed_texts(student, tiny_text.ids_val, tiny_text.mask_val),
                                 tiny_outputs.val)


def test_a_student_shaped_as_its_teacher_starts_as_the_teacher(tiny_teacher: distill.HFTeacher,
                                                                tiny_text: distill.TextData,
                                                                tiny_outputs: distill.TextTeacherOutputs) -> None:
    assert tiny_text.seq_len <= 24
    student = _student(tiny_teacher, layers=TINY_LAYERS, heads=TINY_HEADS, ffn_ratio=2)  # the teacher's 64 units
    distill.init_from_teacher(student, tiny_teacher.weights())
    fidelity = _fidelity(student, tiny_text, tiny_outputs)
    assert fidelity.cosine > 0.99999 and fidelity.neighbour_agreement == 1.0, fidelity


def test_narrower_students_start_closer_to_the_teacher_than_random_ones(
        tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData, tiny_outputs: distill.TextTeacherOutputs) -> None:
    weights = tiny_teacher.weights()
    for arch in ({"layers": 2, "hidden": TINY_HIDDEN // 2, "heads": 2, "ffn_ratio": 2, "embed": TINY_HIDDEN // 2},
                 {"layers": 1, "hidden": TINY_HIDDEN, "heads": 2, "ffn_ratio": 1, "embed": TINY_HIDDEN // 4}):
        student = _student(tiny_teacher, **arch)
        random = _fidelity(student, tiny_text, tiny_outputs)
        distill.init_from_teacher(student, weights)
        started = _fidelity(student, tiny_text, tiny_outputs)
        assert started.cosine > random.cosine + 0.3, (arch, random, started)
    assert distill.text.start_layers(2, 6) == [0, 3] and distill.text.start_layers(3, 3) == [0, 1, 2]


def test_students_start_from_the_teachers_embedding_tables(tiny_teacher: distill.HFTeacher) -> None:
    weights = tiny_teacher.weights()
    tokens, positions = weights.tokens, weights.positions
    narrow = _student(tiny_teacher, embed=TINY_HIDDEN // 4)
    distill.init_from_teacher(narrow, weights)
    # Narrower: the top principal directions keep more of the tables' variance than a random projection.
    generator = torch.Generator().manual_seed(0)
    random_basis = torch.linalg.qr(torch.randn(TINY_HIDDEN, TINY_HIDDEN // 4, generator=generator))[0]
    assert narrow.tokens.weight.var(0).sum() > ((tokens - tokens.mean(0)) @ random_basis).var(0).sum()
    projected = positions[:24] @ weights.basis[:, :8]
    torch.testing.assert_close(torch.cdist(narrow.positions.weight, narrow.positions.weight),
                               torch.cdist(projected, projected))
    # Wider than the teacher: the table fills the first columns, the rest keep their random start; no layers.
    embeddings_only = replace(weights, tokens=tokens[:, :8], positions=None,
                              basis=distill.principal_basis(tokens[:, :8]))
    wide = _student(tiny_teacher)
    start = wide.state_dict()
    distill.init_from_teacher(wide, embeddings_only)
    torch.testing.assert_close(wide.tokens.weight[:, :8], tokens[:, :8])
    assert all(torch.equal(value, start[name]) for name, value in wide.state_dict().items() if name != "tokens.weight")
    assert torch.equal(wide.tokens.weight[:, 8:], start["tokens.weight"][:, 8:])


def test_teacher_weights_name_every_layer_tensor(tiny_teacher: distill.HFTeacher) -> None:
    weights = tiny_teacher.weights()
    with pytest.raises(ValueError, match="must hold exactly"):
        replace(weights, layers=({"attention.qkv.weight": weights.tokens},))


def test_rungs_score_the_validation_cosine_and_may_stop_the_run(tiny_teacher: distill.HFTeacher,
                                                                tiny_text: distill.TextData,
                                                                tiny_outputs: distill.TextTeacherOutputs) -> None:
    student = _student(tiny_teacher, hidden=TINY_HIDDEN // 2, embed=TINY_HIDDEN // 2)
    distill.init_from_teacher(student, tiny_teacher.weights())
    scores: list[float] = []

    def should_stop(rung: int, model: torch.nn.Module) -> bool:
        scores.append(distill.validation_cosine(model, tiny_text, tiny_outputs))
        return rung == 1

    rungs = distill.Rungs((0.25, 0.5, 0.75), should_stop)
    config = distill.TextDistillConfig(steps=40, lr=3e-3)
    result = distill.distill_text(student, tiny_text, tiny_outputs, config, losses=("cosine",), rungs=rungs,
                                  progress=True)
    assert (result.stopped_at_rung, result.steps, len(scores)) == (1, 20, 2)
    assert scores[1] == pytest.approx(result.cosine)  # the rung scored the student that the run returns


def test_chance_is_the_best_constant_embedding(tiny_outputs: distill.TextTeacherOutputs) -> None:
    chance = distill.constant_cosine(tiny_outputs.train, tiny_outputs.val)
    val = torch.from_numpy(np.asarray(tiny_outputs.val, np.float64))
    others = [torch.nn.functional.cosine_similarity(val, row[None], dim=1).mean().item()
              for row in torch.from_numpy(np.asarray(tiny_outputs.train[:20], np.float64))]
    assert 0 < chance < 1 and chance > max(others)  # no single training text's embedding does better


def test_an_epoch_counts_the_sources_texts_and_batches_draw_extra_ones(tiny_teacher: distill.HFTeacher,
                                                                       tmp_path: Path) -> None:
    (tmp_path / "extra.txt").write_text("\n".join(distill.read_texts(distill.BUILTIN_TEXT)[0][-64:]))
    data = distill.load_text_dataset(distill.BUILTIN_TEXT, tiny_teacher.tokenizer, seq_len=24, max_texts=80,
                                     extra=f"text:{tmp_path / 'extra.txt'}")
    outputs = distill.text_teacher_outputs(tiny_teacher, data, tmp_path)
    assert data.num_own_train == 64 and data.num_extra > 32
    config = distill.TextDistillConfig(epochs=1.5, batch_size=16, lr=3e-3)
    student = _student(tiny_teacher, hidden=TINY_HIDDEN // 2, embed=TINY_HIDDEN // 2)
    result = distill.distill_text(student, data, outputs, config, losses=("cosine",))
    assert result.steps == 6  # 1.5 epochs of the 64 own training texts, however many extra texts join them
    # Batches are drawn from every training text: NaN teacher outputs of the extra texts poison the loss.
    poisoned = np.concatenate([outputs.train[:64], np.full((data.num_extra, TINY_HIDDEN), np.nan, np.float32)])
    with pytest.raises(distill.DistillError, match="The training loss became nan at step"):
        distill.distill_text(student, data, replace(outputs, train=poisoned), config, losses=("cosine",))
