from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch.nn as nn

import hwprofile
from hwprofile.stats import LatencyStats

FAST = hwprofile.MeasureConfig(min_runs=30, min_seconds=0.05, warmup_seconds=0.01)


def _mlp(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    cin = 64
    for _ in range(depth):
        layers += [nn.Linear(cin, width), nn.ReLU()]
        cin = width
    return nn.Sequential(*layers, nn.Linear(cin, 10))


def test_latency_stats_from_known_samples() -> None:
    samples = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    stats = LatencyStats.from_samples(samples, cold_ms=5.0, session_ms=7.0, cv_threshold=0.5)
    assert stats.median_ms == 3.0 and stats.min_ms == 1.0 and stats.mean_ms == 22.0
    assert stats.p90_ms == pytest.approx(61.6)  # linear interpolation between 4 and 100
    assert stats.cv == pytest.approx(1.4826 * 1.0 / 3.0)  # MAD = median(|x - 3|) = 1: the outlier doesn't count
    assert stats.stable is True and stats.runs == 5
    assert LatencyStats.from_samples(samples, cold_ms=5.0, session_ms=7.0, cv_threshold=0.4).stable is False


def test_real_session_measurement_is_ordered_and_meets_its_minimums(tmp_path: Path) -> None:
    path = hwprofile.export_onnx(_mlp(64, 2), (1, 8, 8), tmp_path / "mlp.onnx")
    stats = hwprofile.measure_latency(path, FAST)
    assert stats.runs >= FAST.min_runs
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms
    assert stats.session_ms > 0 and stats.cold_ms > 0 and stats.cv >= 0


def test_larger_model_and_larger_batch_measure_slower(tmp_path: Path) -> None:
    small = hwprofile.export_onnx(_mlp(16, 1), (1, 8, 8), tmp_path / "small.onnx")
    large = hwprofile.export_onnx(_mlp(1024, 4), (1, 8, 8), tmp_path / "large.onnx")
    assert hwprofile.measure_latency(large, FAST).median_ms > 3 * hwprofile.measure_latency(small, FAST).median_ms
    batched = hwprofile.MeasureConfig(batch=64, min_runs=30, min_seconds=0.05)
    assert hwprofile.measure_latency(large, batched).median_ms > hwprofile.measure_latency(large, FAST).median_ms


def test_invalid_measure_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="`threads` and `batch` must be >= 1"):
        hwprofile.MeasureConfig(threads=0)
