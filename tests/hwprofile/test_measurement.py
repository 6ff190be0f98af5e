from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hwprofile
from hwprofile.measurement import LatencyStats
from tests.hwprofile.conftest import FAST


def test_latency_stats_from_known_samples() -> None:
    samples = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    stats = LatencyStats.from_samples(samples, cold_ms=5.0, session_ms=7.0, cv_threshold=0.5)
    assert stats.median_ms == 3.0 and stats.min_ms == 1.0 and stats.mean_ms == 22.0 and stats.max_ms == 100.0
    assert stats.p90_ms == pytest.approx(61.6)  # linear interpolation between 4 and 100
    assert stats.cv == pytest.approx(1.4826 * 1.0 / 3.0)  # MAD = median(|x - 3|) = 1: the outlier doesn't count
    assert stats.stable is True and stats.runs == 5
    assert LatencyStats.from_samples(samples, cold_ms=5.0, session_ms=7.0, cv_threshold=0.4).stable is False


def test_stats_round_trip_through_dicts() -> None:
    stats = LatencyStats.from_samples(np.array([1.0, 2.0, 3.0]), cold_ms=1.0, session_ms=2.0, cv_threshold=0.1)
    assert LatencyStats.from_dict({**stats.to_dict(), "unrelated": 1}) == stats


def test_measurement_round_trips_through_its_json(small_onnx: Path) -> None:
    result = hwprofile.measure_local(small_onnx, FAST)
    data = result.to_dict()
    assert {"median_ms", "p90_ms", "cv", "runs", "params", "macs", "size_bytes", "batch", "threads", "provider",
            "backend_version", "peak_memory_bytes", "device", "model_sha256", "cached"} <= set(data)
    assert hwprofile.Measurement.from_dict(data) == result
    remote = hwprofile.Measurement.from_dict({**data, "agent": {"queued_s": 0.5}}, target="http://dev:8765")
    assert remote.extra == {"agent": {"queued_s": 0.5}} and remote.target == "http://dev:8765"
    assert remote.to_dict() == {**data, "agent": {"queued_s": 0.5}, "target": "http://dev:8765"}
