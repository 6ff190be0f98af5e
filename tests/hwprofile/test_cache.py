"""The measurement cache, with a scripted backend: whether a measurement is stable is decided by its script."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import hwprofile
from hwprofile.cache import cache_key
from tests.hwprofile.conftest import Scripted, mlp

SETUP = hwprofile.MeasureConfig().setup()
DEVICE = {"cpu": "Cortex-A78AE", "cores": 6, "machine": "aarch64", "system": "Linux", "board": "Jetson Orin",
          "gpus": [], "hostname": "a"}


def steady(call: int) -> float:
    return 1.0


def noisy(call: int) -> float:
    return 1.0 if call % 2 else 2.0  # robust CV of 1, 2, 1, 2, ...: 1.4826 * 0.5 / 1.5 ≈ 0.49


def test_key_covers_model_device_backend_and_setup_but_not_host_name_or_protocol() -> None:
    base = cache_key("abc", DEVICE, SETUP, "1.20")
    assert cache_key("abc", {**DEVICE, "hostname": "b", "usable_cores": 3}, SETUP, "1.20") == base
    assert cache_key("abc", DEVICE, hwprofile.MeasureConfig(min_runs=500, max_seconds=60).setup(), "1.20") == base
    changed = [cache_key("abd", DEVICE, SETUP, "1.20"), cache_key("abc", DEVICE, SETUP, "1.21"),
               cache_key("abc", {**DEVICE, "cpu": "Cortex-A57"}, SETUP, "1.20"),
               cache_key("abc", {**DEVICE, "cores": 4}, SETUP, "1.20"),
               cache_key("abc", {**DEVICE, "gpus": ["Orin"]}, SETUP, "1.20")]
    for change in [{"threads": 2}, {"batch": 8}, {"provider": "xnnpack"}, {"dims": {"seq": 4}}, {"precision": "fp16"},
                   {"spinning": False}, {"graph_optimization": "basic"}, {"backend": "tensorrt"}]:
        changed.append(cache_key("abc", DEVICE, hwprofile.MeasureConfig(**change).setup(), "1.20"))
    assert base not in changed and len(set(changed)) == len(changed)


def test_identical_students_are_measured_once(tmp_path: Path, scripted: Scripted) -> None:
    config = scripted(steady)
    student = mlp(32, 2)
    first = hwprofile.export_onnx(student, (1, 8, 8), tmp_path / "trial-1.onnx")
    again = hwprofile.export_onnx(student, (1, 8, 8), tmp_path / "trial-7.onnx")
    assert first.read_bytes() == again.read_bytes()
    cache = hwprofile.MeasurementCache(tmp_path / "measurements.sqlite")
    measured = hwprofile.profile(first, config, cache=cache)
    reused = hwprofile.profile(again, config, cache=cache)
    assert measured.latency.stable and measured.cached is False and reused.cached is True and len(cache) == 1
    assert reused.latency == measured.latency and reused.model == measured.model
    assert reused.started_at == measured.started_at  # the same measurement, not a new one
    assert hwprofile.profile(first, config).cached is False  # no cache: always measured


def test_another_setup_or_backend_version_is_measured_again(tmp_path: Path, small_onnx: Path,
                                                            scripted: Scripted) -> None:
    config = scripted(steady)
    cache = hwprofile.MeasurementCache(tmp_path / "c.sqlite")
    first = hwprofile.profile(small_onnx, config, cache=cache)
    assert hwprofile.profile(small_onnx, replace(config, threads=2), cache=cache).cached is False and len(cache) == 2
    precise = replace(config, min_runs=40)  # how precise a number is, not what it measures: the same key
    assert hwprofile.profile(small_onnx, precise, cache=cache).cached is True
    scripted(steady, runtime_version="2")  # the runtime was upgraded
    upgraded = hwprofile.profile(small_onnx, config, cache=cache)
    assert upgraded.cached is False and upgraded.setup["backend_version"] == "2" and len(cache) == 3
    scripted(steady, runtime_version="1")
    assert hwprofile.profile(small_onnx, config, cache=cache).started_at == first.started_at


def test_unstable_measurements_are_not_cached(tmp_path: Path, small_onnx: Path, scripted: Scripted) -> None:
    config = scripted(noisy)
    cache = hwprofile.MeasurementCache(tmp_path / "c.sqlite")
    flagged = hwprofile.profile(small_onnx, config, cache=cache)
    assert flagged.latency.stable is False and flagged.latency.cv > config.cv_threshold and len(cache) == 0
    assert hwprofile.profile(small_onnx, config, cache=cache).cached is False and len(cache) == 0
    scripted(steady)  # the same model and setup, measured steadily this time: now it is kept
    kept = hwprofile.profile(small_onnx, config, cache=cache)
    assert kept.latency.stable and kept.cached is False and len(cache) == 1
    again = hwprofile.profile(small_onnx, config, cache=cache)
    assert again.cached is True and again.latency == kept.latency


def test_cache_is_a_file_shared_between_instances(tmp_path: Path, small_onnx: Path, scripted: Scripted) -> None:
    config = scripted(steady)
    hwprofile.profile(small_onnx, config, cache=tmp_path / "c.sqlite")
    assert hwprofile.profile(small_onnx, config, cache=str(tmp_path / "c.sqlite")).cached is True
