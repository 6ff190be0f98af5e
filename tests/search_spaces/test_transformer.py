from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch

import hwprofile
from search_spaces import INPUT_NAMES, Arch, TransformerSpace, example_inputs, get_space

VOCAB, OUT_DIM, SEQ = 500, 48, 16
Sampler = Callable[..., list[Arch]]


def _batch(batch: int = 3, seq: int = SEQ, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=generator)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[1, seq // 2:] = 0  # a padded text
    ids[1, seq // 2:] = 0
    return ids, mask


def test_sampled_archs_are_json_valid_and_reproducible(sampled_archs: Sampler) -> None:
    space = get_space("transformer")
    assert isinstance(space, TransformerSpace)
    for arch in sampled_archs("transformer", 20):
        assert json.loads(json.dumps(arch)) == arch
        assert arch["hidden"] % arch["heads"] == 0 and 0 < arch["embed"] <= arch["hidden"]
        assert 1 <= arch["layers"] <= 4 and 64 <= arch["hidden"] <= 384 and 1 <= arch["ffn_ratio"] <= 4
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    arch = space.sample(trial)
    assert space.sample(optuna.trial.FixedTrial(trial.params)) == arch
    assert space.smallest() == {"layers": 1, "hidden": 64, "heads": 1, "ffn_ratio": 1, "embed": 16}
    assert space.largest() == {"layers": 4, "hidden": 384, "heads": 8, "ffn_ratio": 4, "embed": 384}


def test_smallest_and_largest_bracket_every_sampled_arch(sampled_archs: Sampler) -> None:
    space = get_space("transformer")

    def count(arch: Arch) -> int:
        return sum(p.numel() for p in space.build(arch, (SEQ,), OUT_DIM, vocab_size=VOCAB).parameters())

    smallest, largest = count(space.smallest()), count(space.largest())
    assert all(smallest <= count(arch) <= largest for arch in sampled_archs("transformer", 20))
    assert largest > 20 * smallest


def test_student_shapes_layers_and_attention_probabilities() -> None:
    space = get_space("transformer")
    arch = {"layers": 3, "hidden": 64, "heads": 4, "ffn_ratio": 2, "embed": 32}
    student = space.build(arch, (SEQ,), OUT_DIM, vocab_size=VOCAB).eval()
    ids, mask = _batch()
    with torch.no_grad():
        out = student(ids, mask, return_layers=True)
        plain = student(ids, mask)
    assert plain.shape == (3, OUT_DIM) and torch.equal(plain, out.embedding)
    assert [tuple(h.shape) for h in out.hidden_states] == [(3, SEQ, 64)] * 3
    assert [tuple(a.shape) for a in out.attentions] == [(3, 4, SEQ, SEQ)] * 3
    for probs in out.attentions:
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, SEQ))
        assert probs[1, :, :, SEQ // 2:].max() < 1e-6  # padded keys get no attention
    # Padding beyond a text changes nothing: the embedding of a short input equals that of the padded one.
    with torch.no_grad():
        short = student(ids[1:2, :SEQ // 2], mask[1:2, :SEQ // 2])
    torch.testing.assert_close(short, plain[1:2], atol=1e-5, rtol=1e-5)


def test_build_errors_name_what_is_expected() -> None:
    space = get_space("transformer")
    arch = space.smallest()
    with pytest.raises(ValueError, match="vocab_size"):
        space.build(arch, (SEQ,), OUT_DIM)
    with pytest.raises(ValueError, match=r"input_shape=\(seq_len,\)"):
        space.build(arch, (1, 8, 8), OUT_DIM, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="hidden % heads"):
        space.build({**arch, "heads": 3}, (SEQ,), OUT_DIM, vocab_size=VOCAB)
    student = space.build(arch, (SEQ,), OUT_DIM, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="at most 16 tokens"):
        student(*_batch(seq=SEQ + 1))


def test_sampled_students_match_in_onnx_runtime(tmp_path: Path, sampled_archs: Sampler) -> None:
    space = get_space("transformer")
    ids, mask = _batch()
    for index, arch in enumerate([space.smallest(), *sampled_archs("transformer", 3, seed=1)]):
        torch.manual_seed(index)
        student = space.build(arch, (SEQ,), OUT_DIM, vocab_size=VOCAB).eval()
        path = hwprofile.export_onnx_inputs(student, example_inputs(SEQ), tmp_path / f"s{index}.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        assert [(i.name, i.type, i.shape) for i in inputs] == [
            ("input_ids", "tensor(int64)", ["batch", SEQ]), ("attention_mask", "tensor(int64)", ["batch", SEQ])]
        assert tuple(i.name for i in inputs) == INPUT_NAMES == tuple(example_inputs(SEQ))
        got = session.run(None, dict(zip(INPUT_NAMES, (ids.numpy(), mask.numpy()))))[0]
        with torch.no_grad():
            expected = student(ids, mask).numpy()
        assert got.shape == (3, OUT_DIM)
        assert np.abs(got - expected).max() <= 1e-4, arch


def test_macs_count_the_attention_matmuls(tmp_path: Path) -> None:
    hidden, heads, ffn, embed, layers, seq = 64, 4, 128, 32, 2, SEQ
    arch = {"layers": layers, "hidden": hidden, "heads": heads, "ffn_ratio": ffn // hidden, "embed": embed}
    student = get_space("transformer").build(arch, (seq,), OUT_DIM, vocab_size=VOCAB)
    with torch.no_grad():  # distinct LayerNorm weights: the exporter merges identical initializers
        for parameter in student.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    stats = hwprofile.model_stats(hwprofile.export_onnx_inputs(student, example_inputs(seq), tmp_path / "s.onnx"))
    attention = 2 * seq * seq * hidden  # Q·Kᵀ and P·V over all heads
    linear = seq * hidden * 3 * hidden + seq * hidden * hidden + 2 * seq * hidden * ffn  # QKV, output, FFN
    expected = seq * embed * hidden + layers * (linear + attention) + hidden * OUT_DIM
    assert stats.macs == expected
    assert stats.params == sum(p.numel() for p in student.parameters())
