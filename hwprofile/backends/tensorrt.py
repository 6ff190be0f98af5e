"""TensorRT 10/11: build a strongly typed engine from the ONNX file, run it with execute_async_v3.

Written against the TensorRT 10/11 Python API (``tensorrt`` package; JetPack ships it on Jetson):
``Builder.create_network`` with the STRONGLY_TYPED flag (always on, and the flag ignored, in 11),
``OnnxParser``, one optimisation profile pinned to the measured shapes, ``build_serialized_network``,
``Runtime.deserialize_cuda_engine``, name-based ``set_input_shape``/``set_tensor_address`` and
``execute_async_v3`` on a CUDA stream, timed with CUDA events. FP16 is a converted ONNX model
(:mod:`hwprofile.precision`): TensorRT 11 has no FP16 builder flag. INT8 is a QDQ file, built as
it is (explicit quantization): it must be symmetric int8 (``hwprofile.quantize_int8(..., int8_format="tensorrt")``),
which is checked before the build, and it is never converted to fp16. Device buffers, the stream
and the events come from PyTorch's CUDA runtime, so the backend needs a CUDA build of torch.

Engines are cached as ``<sha256>.plan`` files under ``$HWPROFILE_ENGINE_CACHE`` (default
``~/.cache/hwprofile/tensorrt``), keyed by the ONNX bytes, the shapes, the precision, the
TensorRT version and the GPU, so a repeated measurement skips the build.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from hwprofile.backends._cuda import cuda_torch
from hwprofile.config import MeasureConfig
from hwprofile.errors import BackendUnavailableError, InvalidModelError
from hwprofile.graph import onnx_input_specs
from hwprofile.inputs import random_inputs, resolve_shapes
from hwprofile.precision import QDQ_OPS, to_fp16
from hwprofile.registry import Backend, Runner, register_backend

WORKSPACE_BYTES = 1 << 30
# The zero-point types of the Q/DQ pairs TensorRT's explicit quantization takes (signed and symmetric: zero points 0).
QUANTIZED_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.INT4, onnx.TensorProto.FLOAT8E4M3FN)


def engine_cache_dir() -> Path:
    return Path(os.environ.get("HWPROFILE_ENGINE_CACHE", Path("~/.cache/hwprofile/tensorrt").expanduser()))


def _tensorrt() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise BackendUnavailableError("The tensorrt backend needs TensorRT's Python package: pip install tensorrt "
                                      "(x86-64 or SBSA) or JetPack's python3-libnvinfer on Jetson.") from None
    return trt


@register_backend("tensorrt")
class TensorRTBackend(Backend):
    def version(self) -> str:
        trt = _tensorrt()
        cuda_torch()
        return str(trt.__version__)

    def open(self, path: Path, config: MeasureConfig) -> Runner:
        return TensorRTRunner(path, config)


def engine_key(onnx_bytes: bytes, shapes: dict[str, tuple[int, ...]], precision: str, trt_version: str,
               gpu: str) -> str:
    text = json.dumps({"shapes": {k: list(v) for k, v in sorted(shapes.items())}, "precision": precision,
                       "tensorrt": trt_version, "gpu": gpu}, sort_keys=True)
    return hashlib.sha256(onnx_bytes + text.encode()).hexdigest()


def check_explicit_quantization(model: onnx.ModelProto, label: str) -> None:
    """An :class:`InvalidModelError` naming the first Q/DQ node of ``model`` whose zero point TensorRT's explicit
    quantization does not take (not 0, or not int8/int4/fp8: ONNX Runtime's x86 format, uint8 activations and int32
    biases); zero points outside the file's initializers are left to TensorRT's parser."""
    initializers = {init.name: init for init in model.graph.initializer
                    if init.data_location != onnx.TensorProto.EXTERNAL}
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS or len(node.input) < 3 or node.input[2] not in initializers:
            continue
        zero_point = initializers[node.input[2]]
        values = numpy_helper.to_array(zero_point)
        if zero_point.data_type not in QUANTIZED_TYPES or np.any(values.astype(np.float32) != 0):
            kind = onnx.TensorProto.DataType.Name(zero_point.data_type).lower()
            raise InvalidModelError(
                f"TensorRT's explicit quantization takes symmetric int8 Q/DQ pairs (zero points 0), but {node.op_type} "
                f"{node.name!r} of {label} has {kind} zero points {values.ravel()[:4].tolist()}: quantize the fp32 "
                f"model with hwprofile.quantize_int8(..., int8_format='tensorrt').")


def build_engine(trt: Any, onnx_bytes: bytes, shapes: dict[str, tuple[int, ...]], path: Path) -> bytes:
    """A serialized engine for ``onnx_bytes`` (read from ``path``), one optimisation profile pinned to ``shapes``;
    a QDQ model is checked first (:func:`check_explicit_quantization`)."""
    label = repr(str(path))
    check_explicit_quantization(onnx.load_from_string(onnx_bytes), label)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes, str(path)):  # the path locates external weights, if any
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise InvalidModelError(f"TensorRT cannot parse {label}: {errors or 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = shapes[tensor.name]
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InvalidModelError(f"TensorRT could not build an engine for {label} (see TensorRT's log above).")
    return bytes(serialized)


class TensorRTRunner(Runner):
    def __init__(self, path: Path, config: MeasureConfig) -> None:
        trt, torch = _tensorrt(), cuda_torch()
        self._tmp = tempfile.TemporaryDirectory(prefix="hwprofile-trt-")
        model = to_fp16(path, Path(self._tmp.name) / path.name) if config.precision == "fp16" else path
        specs = onnx_input_specs(path)
        shapes = resolve_shapes(specs, config.batch, config.dims_dict)
        onnx_bytes = model.read_bytes()
        gpu = torch.cuda.get_device_name()
        cache = engine_cache_dir() / f"{engine_key(onnx_bytes, shapes, config.precision, trt.__version__, gpu)}.plan"
        self.engine_cached = cache.is_file()
        if self.engine_cached:
            plan = cache.read_bytes()
        else:
            plan = build_engine(trt, onnx_bytes, shapes, model)
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(plan)
            partial.replace(cache)
        torch.cuda.synchronize()
        free_before, _ = torch.cuda.mem_get_info()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendUnavailableError(f"TensorRT {trt.__version__} cannot deserialize the cached engine "
                                          f"{str(cache)!r}.")
        self.context = self.engine.create_execution_context()
        feed = random_inputs(specs, shapes)
        dtypes = _torch_dtypes(trt, torch)
        self.buffers = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.context.set_input_shape(name, shapes[name])
                tensor = torch.from_numpy(feed[name]).to("cuda").to(dtypes[self.engine.get_tensor_dtype(name)])
            else:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise InvalidModelError(f"Output {name!r} of {str(path)!r} has a data-dependent shape {shape}; "
                                            f"the tensorrt backend needs shapes known from the inputs.")
                tensor = torch.empty(shape, dtype=dtypes[self.engine.get_tensor_dtype(name)], device="cuda")
            self.buffers[name] = tensor.contiguous()
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
        self.stream = torch.cuda.Stream()
        self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        self._gpu_bytes = max(0, free_before - torch.cuda.mem_get_info()[0])
        self._version = trt.__version__
        self._gpu = gpu

    def run(self) -> float:
        self.start.record(self.stream)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see TensorRT's log).")
        self.end.record(self.stream)
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))

    def peak_gpu_memory_bytes(self) -> int | None:
        return self._gpu_bytes

    def describe(self) -> dict[str, Any]:
        return {"provider": f"TensorRT {self._version}", "gpu": self._gpu, "engine_cached": self.engine_cached}

    def close(self) -> None:
        del self.context, self.engine, self.buffers
        self._tmp.cleanup()


def _torch_dtypes(trt: Any, torch: Any) -> dict[Any, Any]:
    pairs = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
             "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool, "UINT8": torch.uint8}
    return {getattr(trt.DataType, name): dtype for name, dtype in pairs.items() if hasattr(trt.DataType, name)}
