"""TensorRT and PyTorch-on-CUDA backends.

What needs a GPU or TensorRT is skipped, visibly, where they are missing (the project's CI has
neither); what does not — input specs, engine cache keys, the check of a QDQ file's zero points,
loading and binding a .pt2 program, MACs from PyTorch's FLOP counter, the errors — runs everywhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import hwprofile
from hwprofile.backends.tensorrt import TensorRTRunner, check_explicit_quantization, engine_key
from hwprofile.inputs import random_inputs
from hwprofile.backends.torch_cuda import TorchRunner
from hwprofile.graph import onnx_input_specs
from tests.hwprofile.test_graph import ConvNet

HAS_CUDA = torch.cuda.is_available()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here (CPU-only torch / no GPU)")
needs_tensorrt = pytest.mark.skipif(not (HAS_TENSORRT and HAS_CUDA),
                                    reason="TensorRT and a CUDA GPU are not available here (pip install tensorrt)")
GPU_FAST = hwprofile.MeasureConfig(min_runs=30, min_seconds=0.05, warmup_seconds=0.05)


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return hwprofile.export_onnx(ConvNet(), (3, 8, 8), tmp_path_factory.mktemp("onnx") / "conv.onnx")


def _int8(fp32: Path, fmt: str) -> Path:
    """``fp32`` quantized in ``fmt``, calibrated on fixed random inputs (the distribution the tests feed it)."""
    feeds = [{"input": np.random.default_rng(seed).standard_normal((64, 3, 8, 8), dtype=np.float32)}
             for seed in range(2)]
    return hwprofile.quantize_int8(fp32, fp32.with_name(f"conv-{fmt}.onnx"), feeds, int8_format=fmt)


@pytest.fixture(scope="module")
def conv_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hwprofile.export_pt2(ConvNet(), (3, 8, 8), tmp_path_factory.mktemp("pt2") / "conv.pt2")


def test_onnx_input_specs_and_engine_keys(small_onnx: Path) -> None:
    (spec,) = onnx_input_specs(small_onnx)
    assert spec.name == "input" and spec.dims == ("batch", 1, 8, 8) and spec.dtype == np.float32
    data, shapes = small_onnx.read_bytes(), {"input": (1, 1, 8, 8)}
    key = engine_key(data, shapes, "fp32", "10.9.0", "NVIDIA H100")
    assert key == engine_key(data, dict(shapes), "fp32", "10.9.0", "NVIDIA H100")
    others = {engine_key(data, {"input": (4, 1, 8, 8)}, "fp32", "10.9.0", "NVIDIA H100"),
              engine_key(data, shapes, "fp16", "10.9.0", "NVIDIA H100"),
              engine_key(data, shapes, "fp32", "11.0.0", "NVIDIA H100"),
              engine_key(data, shapes, "fp32", "10.9.0", "Orin"),
              engine_key(data + b" ", shapes, "fp32", "10.9.0", "NVIDIA H100")}
    assert key not in others and len(others) == 5


@pytest.mark.skipif(HAS_TENSORRT and HAS_CUDA, reason="TensorRT and CUDA are installed here")
def test_tensorrt_missing_is_a_clear_error(small_onnx: Path) -> None:
    with pytest.raises(hwprofile.BackendUnavailableError, match="tensorrt|CUDA"):
        hwprofile.measure_latency(small_onnx, hwprofile.MeasureConfig(backend="tensorrt"))
    assert hwprofile.available_backends()["tensorrt"]["available"] is False


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_measures_and_caches_engines(small_onnx: Path, precision: str) -> None:
    config = hwprofile.MeasureConfig(backend="tensorrt", precision=precision, batch=4, min_runs=30, min_seconds=0.05)
    first = hwprofile.measure_local(small_onnx, config)
    assert first.latency.runs >= 30 and 0 < first.latency.min_ms <= first.latency.median_ms
    assert first.latency.peak_gpu_memory_bytes is not None and first.setup["precision"] == precision
    again = hwprofile.measure_local(small_onnx, config)
    assert again.setup["engine_cached"] is True and again.latency.session_ms < first.latency.session_ms


def test_only_symmetric_int8_qdq_files_go_to_tensorrt(conv_onnx: Path) -> None:
    """ONNX Runtime's x86 format (uint8 activations, int32 biases) is refused before a build, naming the format that
    TensorRT's explicit quantization takes; that format and float models pass."""
    for path in (conv_onnx, _int8(conv_onnx, "tensorrt")):
        check_explicit_quantization(hwprofile.load_onnx(path), repr(str(path)))
    x86 = _int8(conv_onnx, "ort")
    with pytest.raises(hwprofile.InvalidModelError, match="zero points 0.*conv-ort.onnx' has (uint8|int32) zero "
                                                          "points .*int8_format='tensorrt'"):
        check_explicit_quantization(hwprofile.load_onnx(x86), repr(str(x86)))


@needs_tensorrt
def test_tensorrt_builds_and_runs_a_tensorrt_format_int8_file(conv_onnx: Path) -> None:
    """The QDQ file is built as it is (strongly typed: int8 where its Q/DQ pairs say), and TensorRT's int8 kernels
    compute what ONNX Runtime's simulation of the file does, to within a few quantization steps."""
    path = _int8(conv_onnx, "tensorrt")
    config = hwprofile.MeasureConfig(backend="tensorrt", batch=16, min_runs=30, min_seconds=0.05)
    measured = hwprofile.measure_local(path, config)
    assert measured.latency.runs >= 30 and measured.latency.median_ms > 0 and measured.setup["precision"] == "fp32"
    runner = TensorRTRunner(path, config)
    try:
        assert runner.engine_cached and runner.run() > 0
        torch.cuda.synchronize()
        (found,) = [buffer.float().cpu().numpy() for name, buffer in runner.buffers.items() if name != "input"]
    finally:
        runner.close()
    feed = random_inputs(onnx_input_specs(path), {"input": (16, 3, 8, 8)})  # what the runner fed
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    assert found.shape == expected.shape == (16, 10)
    assert np.abs(found - expected).max() <= 0.1 * np.abs(expected).max()
    assert (found.argmax(1) == expected.argmax(1)).mean() >= 0.75
    with pytest.raises(hwprofile.InvalidOptionError, match="is quantized"):
        hwprofile.measure_local(path, hwprofile.MeasureConfig(backend="tensorrt", precision="fp16"))


@needs_tensorrt
def test_tensorrt_rejects_what_it_cannot_parse(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage" * 10)
    with pytest.raises(hwprofile.InvalidModelError, match="corrupt.onnx"):
        hwprofile.measure_latency(corrupt, hwprofile.MeasureConfig(backend="tensorrt"))


@pytest.mark.skipif(not HAS_CUDA or "CUDAExecutionProvider" not in hwprofile.get_backend("ort").providers(),
                    reason="onnxruntime-gpu with a CUDA device is not available here")
def test_ort_cuda_provider_binds_io_on_the_gpu(small_onnx: Path) -> None:
    config = hwprofile.MeasureConfig(provider="cuda", min_runs=30, min_seconds=0.05)
    result = hwprofile.measure_local(small_onnx, config)
    assert result.setup["provider"] == "CUDAExecutionProvider" and result.latency.median_ms > 0


def test_pt2_programs_load_bind_and_count_like_onnx(conv_pt2: Path, tmp_path: Path) -> None:
    onnx_stats = hwprofile.model_stats(hwprofile.export_onnx(ConvNet(), (3, 8, 8), tmp_path / "conv.onnx"))
    torch_stats = hwprofile.get_backend("torch-cuda").model_stats(conv_pt2)
    assert (torch_stats.params, torch_stats.macs) == (onnx_stats.params, onnx_stats.macs)
    runner = TorchRunner(conv_pt2, hwprofile.MeasureConfig(backend="torch-cuda", batch=3), torch, device="cpu")
    try:
        assert runner.inputs[0].shape == (3, 3, 8, 8) and runner.run() > 0
    finally:
        runner.close()


def test_torch_cuda_refuses_onnx_and_needs_cuda(small_onnx: Path, conv_pt2: Path) -> None:
    with pytest.raises(hwprofile.InvalidModelError, match="measures torch.export programs \\(.pt2\\)"):
        hwprofile.get_backend("torch-cuda").model_stats(small_onnx)
    if not HAS_CUDA:
        with pytest.raises(hwprofile.BackendUnavailableError, match="No CUDA device is available"):
            hwprofile.measure_latency(conv_pt2, hwprofile.MeasureConfig(backend="torch-cuda"))


@needs_cuda
def test_torch_cuda_measures_with_cuda_events(conv_pt2: Path) -> None:
    result = hwprofile.measure_local(conv_pt2, hwprofile.MeasureConfig(backend="torch-cuda", batch=8, min_runs=30,
                                                                       min_seconds=0.05))
    assert result.latency.runs >= 30 and result.latency.median_ms > 0
    assert result.latency.peak_gpu_memory_bytes is not None and result.latency.peak_gpu_memory_bytes > 0
    assert result.model.macs > 0
