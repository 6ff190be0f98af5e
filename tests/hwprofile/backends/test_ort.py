from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

import hwprofile
from hwprofile.precision import to_fp16
from tests.hwprofile.conftest import FAST, mlp

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_real_session_measurement_is_ordered_and_meets_its_minimums(small_onnx: Path) -> None:
    stats = hwprofile.measure_latency(small_onnx, FAST)
    assert stats.runs >= FAST.min_runs
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms
    assert stats.session_ms > 0 and stats.cold_ms > 0 and stats.cv >= 0 and stats.attempts >= 1
    assert stats.median_rel_ci95 is not None and stats.median_rel_ci95 >= 0


def test_larger_model_and_larger_batch_measure_slower(tmp_path: Path) -> None:
    small = hwprofile.export_onnx(mlp(16, 1), (1, 8, 8), tmp_path / "small.onnx")
    large = hwprofile.export_onnx(mlp(1024, 4), (1, 8, 8), tmp_path / "large.onnx")
    assert hwprofile.measure_latency(large, FAST).median_ms > 3 * hwprofile.measure_latency(small, FAST).median_ms
    batched = hwprofile.MeasureConfig(batch=64, min_runs=30, min_seconds=0.05)
    assert hwprofile.measure_latency(large, batched).median_ms > hwprofile.measure_latency(large, FAST).median_ms


def test_invalid_measure_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="`threads` and `batch` must be >= 1"):
        hwprofile.MeasureConfig(threads=0)
    with pytest.raises(hwprofile.InvalidOptionError, match="Unknown backend 'onnx'; known backends: ort, tensorrt"):
        hwprofile.MeasureConfig(backend="onnx")
    with pytest.raises(hwprofile.InvalidOptionError, match="provider.*backend 'ort'"):
        hwprofile.MeasureConfig(backend="tensorrt", provider="cuda")
    with pytest.raises(hwprofile.InvalidOptionError, match="`precision` must be one of"):
        hwprofile.MeasureConfig(precision="int8")


def test_unknown_or_missing_provider_lists_the_available_ones(small_onnx: Path) -> None:
    with pytest.raises(hwprofile.BackendUnavailableError, match=r"Unknown ONNX Runtime execution provider 'tpu'; "
                                                                r"available here: .*cpu"):
        hwprofile.measure_latency(small_onnx, hwprofile.MeasureConfig(provider="tpu"))
    here = hwprofile.get_backend("ort").providers()
    missing = next(p for p in ("openvino", "coreml", "dml", "cuda") if p not in here)
    with pytest.raises(hwprofile.BackendUnavailableError, match=rf"'{missing}' is not in this ONNX Runtime build.*"
                                                                r"available here: .*cpu"):
        hwprofile.measure_latency(small_onnx, hwprofile.MeasureConfig(provider=missing))


def test_setup_is_applied_and_recorded(small_onnx: Path) -> None:
    config = hwprofile.MeasureConfig(threads=2, spinning=False, graph_optimization="basic", provider="CPU",
                                     min_runs=10, min_seconds=0.01)
    result = hwprofile.measure_local(small_onnx, config)
    assert result.setup["provider"] == "CPUExecutionProvider" and result.setup["graph_optimization"] == "basic"
    assert result.setup["threads"] == 2 and result.setup["spinning"] is False
    assert result.setup["backend_version"] == ort.__version__
    assert result.model == hwprofile.model_stats(small_onnx)


def test_named_dynamic_dimensions_take_values_from_dims(tmp_path: Path) -> None:
    class Sequence(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x).softmax(-1)

    path = tmp_path / "seq.onnx"
    torch.onnx.export(Sequence(), (torch.zeros(1, 4, 16),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}})
    with pytest.raises(hwprofile.InvalidOptionError, match=r"Input 'x' has dimension 'seq' at axis 1.*--dim seq=N"):
        hwprofile.measure_latency(path, FAST)
    with pytest.raises(hwprofile.InvalidOptionError, match=r"dims \['width'\] name no dynamic dimension.*'seq'"):
        hwprofile.measure_latency(path, hwprofile.MeasureConfig(dims={"seq": 4, "width": 2}))
    short = hwprofile.measure_latency(path, hwprofile.MeasureConfig(dims={"seq": 4}, min_runs=30, min_seconds=0.05))
    long = hwprofile.measure_latency(path, hwprofile.MeasureConfig(dims={"seq": 2048}, min_runs=30, min_seconds=0.05))
    assert long.median_ms > short.median_ms


def test_a_fixed_batch_dimension_refuses_another_batch(tmp_path: Path) -> None:
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(mlp(8, 1), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, input_names=["input"])
    assert hwprofile.measure_latency(path, FAST).runs >= FAST.min_runs
    with pytest.raises(hwprofile.InvalidOptionError, match="fixed batch dimension of 1; batch=4 cannot apply"):
        hwprofile.measure_latency(path, hwprofile.MeasureConfig(batch=4))


def test_fp16_converts_the_model_and_keeps_float32_io(small_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxconverter_common", reason="fp16 conversion needs the 'agent' extra (onnxconverter-common)")
    converted = onnx.load(str(to_fp16(small_onnx, tmp_path / "half.onnx")))
    assert {init.data_type for init in converted.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert converted.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    full = ort.InferenceSession(str(small_onnx)).run(None, {"input": x})[0]
    half = ort.InferenceSession(str(tmp_path / "half.onnx")).run(None, {"input": x})[0]
    assert np.abs(full - half).max() < 1e-2
    config = hwprofile.MeasureConfig(precision="fp16", min_runs=20, min_seconds=0.02)
    result = hwprofile.measure_local(small_onnx, config)
    assert result.setup["precision"] == "fp16" and result.latency.median_ms > 0


def test_peak_memory_grows_with_the_weights(tmp_path: Path) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak memory needs Linux /proc/self/clear_refs")
    small = hwprofile.export_onnx(mlp(16, 1), (1, 8, 8), tmp_path / "small.onnx")
    large = hwprofile.export_onnx(mlp(2048, 3), (1, 8, 8), tmp_path / "large.onnx")  # ~8.5M params, ~34 MB
    config = hwprofile.MeasureConfig(min_runs=5, min_seconds=0.01)
    small_peak = hwprofile.measure_latency(small, config).peak_memory_bytes
    large_peak = hwprofile.measure_latency(large, config).peak_memory_bytes
    assert small_peak is not None and large_peak is not None
    assert large_peak > 30e6 > small_peak


def test_a_corrupt_model_fails_before_measuring(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08garbage" * 100)
    with pytest.raises(hwprofile.InvalidModelError, match="corrupt.onnx' is not a valid ONNX model"):
        hwprofile.profile(corrupt)
    with pytest.raises(hwprofile.InvalidModelError, match="absent.onnx' does not exist"):
        hwprofile.profile(tmp_path / "absent.onnx")
