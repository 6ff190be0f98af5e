from __future__ import annotations

from pathlib import Path

import pytest

import hwprofile
from hwprofile.cache import cache_key
from tests.hwprofile.conftest import FAST, mlp

SETUP = hwprofile.MeasureConfig().setup()
DEVICE = {"cpu": "Cortex-A78AE", "cores": 6, "machine": "aarch64", "system": "Linux", "board": "Jetson Orin",
          "gpus": [], "hostname": "a"}


def test_key_covers_model_device_backend_and_setup_but_not_host_name_or_protocol() -> None:
    base = cache_key("abc", DEVICE, SETUP, "1.20")
    assert cache_key("abc", {**DEVICE, "hostname": "b", "usable_cores": 3}, SETUP, "1.20") == base
    assert cache_key("abc", DEVICE, hwprofile.MeasureConfig(min_runs=500, max_seconds=60).setup(), "1.20") == base
    changed = [cache_key("abd", DEVICE, SETUP, "1.20"), cache_key("abc", DEVICE, SETUP, "1.21"),
               cache_key("abc", {**DEVICE, "cpu": "Cortex-A57"}, SETUP, "1.20"),
               cache_key("abc", {**DEVICE, "cores": 4}, SETUP, "1.20"),
               cache_key("abc", {**DEVICE, "gpus": ["Orin"]}, SETUP, "1.20")]
    for change in [{"threads": 2}, {"batch": 8}, {"provider": "xnnpack"}, {"dims": {"seq": 4}}, {"precision": "fp16"},
                   {"spinning": False}, {"graph_optimization": "basic"}]:
        changed.append(cache_key("abc", DEVICE, hwprofile.MeasureConfig(**change).setup(), "1.20"))
    assert base not in changed and len(set(changed)) == len(changed)


def test_identical_students_are_measured_once(tmp_path: Path) -> None:
    student = mlp(32, 2)
    first = hwprofile.export_onnx(student, (1, 8, 8), tmp_path / "trial-1.onnx")
    again = hwprofile.export_onnx(student, (1, 8, 8), tmp_path / "trial-7.onnx")
    assert first.read_bytes() == again.read_bytes()
    cache = hwprofile.MeasurementCache(tmp_path / "measurements.sqlite")
    measured = hwprofile.profile(first, FAST, cache=cache)
    reused = hwprofile.profile(again, FAST, cache=cache)
    assert measured.cached is False and reused.cached is True and len(cache) == 1
    assert reused.latency == measured.latency and reused.model == measured.model
    assert reused.started_at == measured.started_at  # the same measurement, not a new one
    other = hwprofile.profile(again, hwprofile.MeasureConfig(threads=2, min_runs=30, min_seconds=0.05), cache=cache)
    assert other.cached is False and len(cache) == 2
    assert hwprofile.profile(first, FAST).cached is False  # no cache: always measured


def test_cache_is_a_file_shared_between_instances(tmp_path: Path, small_onnx: Path) -> None:
    hwprofile.profile(small_onnx, FAST, cache=tmp_path / "c.sqlite")
    assert hwprofile.profile(small_onnx, FAST, cache=str(tmp_path / "c.sqlite")).cached is True


def test_unstable_measurements_are_not_cached(tmp_path: Path, small_onnx: Path) -> None:
    strict = hwprofile.MeasureConfig(min_runs=30, min_seconds=0.02, cv_threshold=1e-12, repeats_if_unstable=0)
    cache = hwprofile.MeasurementCache(tmp_path / "c.sqlite")
    result = hwprofile.profile(small_onnx, strict, cache=cache)
    if result.latency.cv == 0:
        pytest.skip("this clock gave identical samples: nothing was unstable")
    assert result.latency.stable is False and len(cache) == 0
    assert hwprofile.profile(small_onnx, strict, cache=cache).cached is False


def test_measurement_round_trips_through_its_json(small_onnx: Path) -> None:
    result = hwprofile.measure_local(small_onnx, FAST)
    data = result.to_dict()
    assert {"median_ms", "p90_ms", "cv", "runs", "params", "macs", "size_bytes", "batch", "threads", "provider",
            "backend_version", "peak_memory_bytes", "device", "model_sha256", "cached"} <= set(data)
    assert hwprofile.Measurement.from_dict(data) == result
