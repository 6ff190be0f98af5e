"""ONNX Runtime with an execution provider chosen by name (cpu, cuda, tensorrt, openvino, ...)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from hwprofile.config import MeasureConfig
from hwprofile.errors import BackendUnavailableError, InvalidModelError
from hwprofile.inputs import InputSpec, random_inputs, resolve_shapes
from hwprofile.precision import to_fp16
from hwprofile.registry import Backend, Runner, register_backend

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
                "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
_LEVELS = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
           "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
_DEVICES = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}  # I/O bound on the GPU


def short_name(provider: str) -> str:
    """``CUDAExecutionProvider`` -> ``cuda``."""
    return provider.removesuffix("ExecutionProvider").lower()


def resolve_provider(name: str) -> str:
    """The full name of the provider called ``name`` (short or full), if this build of ONNX Runtime has it."""
    known = {short_name(p): p for p in ort.get_all_providers()}
    full = known.get(name.lower().removesuffix("executionprovider"), name)
    available = ort.get_available_providers()
    if full in available:
        return full
    here = ", ".join(short_name(p) for p in available)
    if full not in known.values():
        raise BackendUnavailableError(f"Unknown ONNX Runtime execution provider {name!r}; available here: {here} "
                                      f"(known to ONNX Runtime: {', '.join(sorted(known))}).")
    raise BackendUnavailableError(f"Execution provider {name!r} is not in this ONNX Runtime build "
                                  f"(onnxruntime {ort.__version__}, {ort.get_device()}); available here: {here}. "
                                  f"Install the build that has it (e.g. onnxruntime-gpu, onnxruntime-openvino).")


@register_backend("ort")
class OrtBackend(Backend):
    def version(self) -> str:
        return ort.__version__

    def providers(self) -> list[str]:
        return [short_name(p) for p in ort.get_available_providers()]

    def open(self, path: Path, config: MeasureConfig) -> Runner:
        return OrtRunner(path, config)


class OrtRunner(Runner):
    """One session with explicit threads, spinning and optimisation level; inputs and outputs pre-bound."""

    def __init__(self, path: Path, config: MeasureConfig) -> None:
        provider = resolve_provider(config.provider or "cpu")
        self._tmp = tempfile.TemporaryDirectory(prefix="hwprofile-") if config.precision == "fp16" else None
        model = to_fp16(path, Path(self._tmp.name) / path.name) if self._tmp else path
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = _LEVELS[config.graph_optimization]
        spin = "1" if config.spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model), options, providers=[provider])
        except Exception as error:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise InvalidModelError(f"ONNX Runtime cannot load {str(path)!r}: {error}".splitlines()[0]) from error
        used = self.session.get_providers()
        if used[0] != provider:  # ORT falls back to the CPU silently when a provider fails to initialise
            raise BackendUnavailableError(f"ONNX Runtime could not enable {provider} for {str(path)!r} (it fell "
                                          f"back to {used[0]}); check that the provider's libraries (CUDA, cuDNN, "
                                          f"TensorRT, ...) are installed and match onnxruntime {ort.__version__}.")
        self.provider = provider
        self.level = config.graph_optimization
        specs = []
        for value in self.session.get_inputs():
            if value.type not in _NUMPY_TYPES:
                raise InvalidModelError(f"Input {value.name!r} of {str(path)!r} has unsupported type {value.type}.")
            specs.append(InputSpec(value.name, tuple(value.shape), np.dtype(_NUMPY_TYPES[value.type])))
        feed = random_inputs(specs, resolve_shapes(specs, config.batch, config.dims_dict))
        device = _DEVICES.get(provider, "cpu")
        self.binding = self.session.io_binding()
        self._inputs = {name: ort.OrtValue.ortvalue_from_numpy(array, device, 0) for name, array in feed.items()}
        for name, value in self._inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for output in self.session.get_outputs():
            self.binding.bind_output(output.name, device)
        self._run = self.session.run_with_iobinding

    def run(self) -> float:
        start = time.perf_counter_ns()
        self._run(self.binding)
        self.binding.synchronize_outputs()
        return (time.perf_counter_ns() - start) / 1e6

    def describe(self) -> dict[str, Any]:
        return {"provider": self.provider, "graph_optimization": self.level}

    def close(self) -> None:
        del self.binding, self._inputs, self.session
        if self._tmp is not None:
            self._tmp.cleanup()
