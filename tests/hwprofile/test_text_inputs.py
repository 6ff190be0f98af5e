from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import hwprofile
from hwprofile.inputs import InputSpec, random_inputs


class Attention(nn.Module):
    """Multi-head attention with the heads split by a reshape after a dynamic batch: the MACs must still count."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, seq = input_ids.shape
        x = (input_ids.float()[:, :, None] * attention_mask.float()[:, :, None]).expand(batch, seq, 8)
        q = x.reshape(batch, seq, 2, 4).transpose(1, 2)  # (batch, heads, seq, head_dim)
        return (q @ q.transpose(-1, -2)).softmax(-1) @ q


def test_named_int64_inputs_export_with_a_dynamic_batch_and_count_4d_matmuls(tmp_path: Path) -> None:
    inputs = {"input_ids": torch.zeros(1, 6, dtype=torch.int64), "attention_mask": torch.ones(1, 6, dtype=torch.int64)}
    path = hwprofile.export_onnx_inputs(Attention(), inputs, tmp_path / "attention.onnx")
    stats = hwprofile.model_stats(path)
    assert stats.macs == 2 * (2 * 6 * 6 * 4)  # two (2 heads x 6 x 6) products of depth 4 at batch 1
    latency = hwprofile.measure_latency(path, hwprofile.MeasureConfig(min_runs=5, min_seconds=0.01,
                                                                       warmup_seconds=0.0, batch=3))
    assert latency.median_ms > 0


def test_mask_inputs_are_all_ones_and_ids_are_valid_indices() -> None:
    specs = [InputSpec("input_ids", ("batch", 8), np.dtype(np.int64)),
             InputSpec("attention_mask", ("batch", 8), np.dtype(np.int64))]
    feed = random_inputs(specs, {"input_ids": (4, 8), "attention_mask": (4, 8)})
    assert feed["attention_mask"].dtype == np.int64 and (feed["attention_mask"] == 1).all()
    assert set(np.unique(feed["input_ids"])) <= {0, 1}
