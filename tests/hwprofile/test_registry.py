from __future__ import annotations

from pathlib import Path

import pytest

import hwprofile
from hwprofile.registry import register_backend, unregister_backend
from tests.hwprofile.conftest import ScriptedBackend


def test_importing_hwprofile_registers_the_built_in_backends() -> None:
    assert {"ort", "tensorrt", "torch-cuda"} <= set(hwprofile.backend_names())
    assert type(hwprofile.get_backend("ort")).__name__ == "OrtBackend"
    report = hwprofile.available_backends()
    assert report["ort"]["available"] is True and "cpu" in report["ort"]["providers"]


def test_a_registered_backend_is_usable_by_name_until_unregistered(small_onnx: Path) -> None:
    class Mine(ScriptedBackend):
        pass

    assert register_backend("mine")(Mine) is Mine and Mine.name == "mine"
    try:
        assert isinstance(hwprofile.get_backend("mine"), Mine) and "mine" in hwprofile.backend_names()
        assert hwprofile.available_backends()["mine"] == {"available": True, "version": "1", "providers": []}
        stats = hwprofile.measure_latency(small_onnx, hwprofile.MeasureConfig(backend="mine", min_runs=5,
                                                                              min_seconds=0.0))
        assert stats.median_ms == 1.0
    finally:
        unregister_backend("mine")
    assert "mine" not in hwprofile.backend_names()
    with pytest.raises(hwprofile.InvalidOptionError, match="Unknown backend 'mine'; known backends: ort, "):
        hwprofile.MeasureConfig(backend="mine")
    with pytest.raises(hwprofile.BackendUnavailableError, match="Unknown backend 'mine'; known backends: ort, "):
        hwprofile.get_backend("mine")

