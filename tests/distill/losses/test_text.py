from __future__ import annotations

import numpy as np
import pytest
import torch

import distill
from distill.losses.text import TextCriterion
from distill.text.data import trim_padding
from search_spaces import get_space
from tests.conftest import TINY_HIDDEN, TINY_LAYERS


def test_uniform_layer_map() -> None:
    assert distill.uniform_layer_map(1, 6) == [5]
    assert distill.uniform_layer_map(2, 6) == [2, 5]
    assert distill.uniform_layer_map(3, 6) == [1, 3, 5]
    assert distill.uniform_layer_map(4, 6) == [1, 2, 4, 5]
    assert distill.uniform_layer_map(4, 12) == [2, 5, 8, 11]
    assert distill.uniform_layer_map(3, 3) == [0, 1, 2]
    assert distill.mapped_teacher_layers([1, 2, 3, 4], 6) == [1, 2, 3, 4, 5]
    assert distill.mapped_teacher_layers([1, 2], 6, ("cosine", "attention")) == [2, 5]
    assert distill.mapped_teacher_layers([1, 2], 6, ("cosine", "similarity")) == []  # no term reads a layer


def test_a_text_spec_names_terms_and_weights() -> None:
    assert distill.parse_text_kd("cosine") == {"cosine": 1.0}
    assert distill.parse_text_kd("cosine + similarity:0.1") == {"cosine": 1.0, "similarity": 0.1}
    for spec, message in [("cosine+kd", "joins cosine"), ("cosine+cosine:2", "each once"), ("cosine:x", "a number"),
                          ("cosine:-1", ">= 0"), ("cosine:nan", ">= 0"), ("cosine+", "expected 'name")]:
        with pytest.raises(ValueError, match=message):
            distill.parse_text_kd(spec)


def _criterion(attention_loss: str, layer_map: list[int]) -> TextCriterion:
    """The layer terms of a 2-layer student of the tiny teacher's width (the cached arrays are not read here)."""
    cached = {k: np.zeros((1, 1, TINY_HIDDEN), np.float16) for k in layer_map}
    return TextCriterion(("hidden", "attention"), teacher_embedding=np.zeros((1, TINY_HIDDEN), np.float32),
                         student_hidden=[TINY_HIDDEN] * 2, layer_map=layer_map, teacher_hidden=cached,
                         teacher_attention=cached, attention_loss=attention_loss)


def test_layer_losses_with_a_layer_map_on_a_real_teacher(tiny_teacher: distill.HFTeacher,
                                                         tiny_text: distill.TextData) -> None:
    """The teacher's own layers as the "student": zero under the right map, positive under a wrong one."""
    ids, mask = torch.from_numpy(tiny_text.ids_train[:6]), torch.from_numpy(tiny_text.mask_train[:6])
    with torch.no_grad():
        out = tiny_teacher.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    hidden, attentions = list(out.hidden_states[1:]), list(out.attentions)
    averaged = [a.mean(dim=1) for a in attentions]  # what the cache holds
    layer_map = [0, 2]  # a 2-layer "student" that is teacher layers 0 and 2
    loss = _criterion("kl", layer_map)
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
        mse = _criterion("mse", layer_map)
        assert mse.attention(student_attention, right[1], mask).item() == pytest.approx(0.0, abs=1e-12)
        assert mse.attention(student_attention, wrong[1], mask).item() > 0


def test_the_terms_of_a_batch_cut_to_its_longest_text_are_those_of_the_padded_batch(
        tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
        tiny_outputs: distill.TextTeacherOutputs) -> None:
    """Training cuts each batch to its longest text: the student and every term, the cached teacher layers
    included, must not see the difference."""
    torch.manual_seed(0)
    student = get_space("transformer").build({"layers": 2, "hidden": 64, "heads": 2, "ffn_ratio": 2, "embed": 32},
                                             (tiny_text.seq_len,), TINY_HIDDEN, vocab_size=tiny_teacher.vocab_size)
    criterion = TextCriterion(distill.TEXT_LOSSES, teacher_embedding=tiny_outputs.train, student_hidden=[64, 64],
                              teacher_layers=TINY_LAYERS, teacher_hidden=tiny_outputs.hidden,
                              teacher_attention=tiny_outputs.attention)
    indices = np.sort(np.argsort(tiny_text.mask_train.sum(axis=1))[:8])  # the shortest texts
    padded = tiny_text.ids_train[indices], tiny_text.mask_train[indices]
    trimmed = trim_padding(*padded)
    assert trimmed[0].shape[1] < tiny_text.seq_len

    def terms(ids: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        ids_, mask_ = torch.from_numpy(ids), torch.from_numpy(mask)
        with torch.no_grad():
            return {name: value.item() for name, value in
                    criterion(student.eval()(ids_, mask_, return_layers=True), mask_, indices).items()}

    full, cut = terms(*padded), terms(*trimmed)
    assert set(full) == set(distill.TEXT_LOSSES)
    assert cut == pytest.approx(full, rel=1e-5, abs=1e-6)
