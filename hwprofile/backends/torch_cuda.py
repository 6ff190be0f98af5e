"""PyTorch eager execution on a CUDA GPU, timed with CUDA events.

PyTorch cannot read ONNX, so this backend measures ``torch.export`` programs (``.pt2`` files, see
:func:`hwprofile.export_pt2`), loaded only once nothing in them could be unpickled or run
(:mod:`hwprofile.backends.pt2`); parameters and MACs come from the program itself (MACs = PyTorch's
FLOP counter / 2, at batch 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwprofile.backends._cuda import cuda_torch
from hwprofile.backends.pt2 import load_program
from hwprofile.config import MeasureConfig
from hwprofile.errors import InvalidOptionError
from hwprofile.inputs import InputSpec, random_inputs, resolve_shapes
from hwprofile.measurement import ModelStats
from hwprofile.registry import Backend, Runner, register_backend


@register_backend("torch-cuda")
class TorchCudaBackend(Backend):
    suffix = ".pt2"

    def version(self) -> str:
        torch = cuda_torch()
        return f"{torch.__version__} (CUDA {torch.version.cuda})"

    def open(self, path: Path, config: MeasureConfig) -> Runner:
        return TorchRunner(path, config, cuda_torch())

    def model_stats(self, path: Path) -> ModelStats:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        program = load_program(path)
        module = program.module()
        params = sum(t.numel() for t in program.state_dict.values())
        specs = program_inputs(program)
        inputs = _tensors(torch, specs, resolve_shapes(specs, 1, {s: 1 for s in _named_dims(specs)}), "cpu")
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(*inputs)
        return ModelStats(params=int(params), macs=int(counter.get_total_flops() // 2), size_bytes=path.stat().st_size)

    def input_specs(self, path: Path) -> list[InputSpec]:
        return program_inputs(load_program(path))


def program_inputs(program: Any) -> list[InputSpec]:
    """The user inputs of an exported program; symbolic sizes become named dynamic dimensions."""
    import torch

    user_inputs = set(program.graph_signature.user_inputs)
    specs = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta["val"]
            dims = tuple(int(d) if isinstance(d, int) else str(d) for d in value.shape)
            dtype = torch.empty((), dtype=value.dtype).numpy().dtype
            specs.append(InputSpec(node.name, dims, np.dtype(dtype)))
    return specs


def _named_dims(specs: list[InputSpec]) -> set[str]:
    return {d for s in specs for axis, d in enumerate(s.dims) if isinstance(d, str) and axis > 0}


def _tensors(torch: Any, specs: list[InputSpec], shapes: dict[str, tuple[int, ...]], device: str) -> list[Any]:
    feed = random_inputs(specs, shapes)
    return [torch.from_numpy(feed[s.name]).to(device) for s in specs]


class TorchRunner(Runner):
    def __init__(self, path: Path, config: MeasureConfig, torch: Any, device: str = "cuda") -> None:
        if config.precision != "fp32":
            raise InvalidOptionError(f"The torch-cuda backend measures the program as exported (fp32), "
                                     f"but got precision={config.precision!r}.")
        self.torch = torch
        program = load_program(path)
        specs = program_inputs(program)
        self.inputs = _tensors(torch, specs, resolve_shapes(specs, config.batch, config.dims_dict), device)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        self.module = program.module().to(device)
        self.device = device
        self._no_grad = torch.no_grad()
        self._no_grad.__enter__()
        if device == "cuda":
            self.stream = torch.cuda.Stream()
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def run(self) -> float:
        if self.device != "cuda":  # the CPU path exists for tests of loading and input binding
            import time

            start = time.perf_counter_ns()
            self.module(*self.inputs)
            return (time.perf_counter_ns() - start) / 1e6
        with self.torch.cuda.stream(self.stream):
            self.start.record(self.stream)
            self.module(*self.inputs)
            self.end.record(self.stream)
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))

    def peak_gpu_memory_bytes(self) -> int | None:
        if self.device != "cuda":
            return None
        return int(self.torch.cuda.max_memory_allocated() - self._base)

    def describe(self) -> dict[str, Any]:
        name = self.torch.cuda.get_device_name() if self.device == "cuda" else "cpu"
        return {"provider": f"torch eager on {name}", "gpu": name if self.device == "cuda" else None}

    def close(self) -> None:
        self._no_grad.__exit__(None, None, None)
        del self.module, self.inputs
