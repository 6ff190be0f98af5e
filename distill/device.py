"""Where training runs: the device (``auto``, ``cpu``, ``cuda``, ``cuda:N``), bf16 autocast, channels-last memory
format, and a hook before every training step.

A :class:`Placement` is what :func:`distill.loop.fit` and its callers take: the model and the criterion train on
``placement.device``, each batch is moved there after it is read and normalised (:meth:`Placement.put`), the
forward pass and the losses run under bf16 autocast when ``placement.bf16`` (the weights stay float32; BatchNorm
normalises in float32), and conv students and their inputs take the channels-last memory format when
``placement.channels_last``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import ContextManager

import torch
import torch.nn as nn

from distill.errors import DistillError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
# On a CPU bf16 is off for students: on this project's 2-core AMD EPYC (AVX512-BF16) it made conv students'
# channels-last training steps 1.3-2.0x slower, and the built-in teacher's (larger, dense convolutions) 1.76x faster:
# see :meth:`Placement.with_native_bf16`. Channels-last on a CPU: it made conv students' fp32 training steps 1.4-2.5x
# faster there and the teacher's 1.26x (bench/cpu_training.py).
CHANNELS_LAST = True
# On CUDA, fp32 in the default memory format: on an H100 (bench/gpu_check.py) bf16 autocast with channels-last was
# the slowest or next-slowest way to train each mbconv student measured (1.03-5.8x slower than fp32: students this
# small leave the tensor cores idle and pay for the casts and layout changes); fp32 was the fastest in 4 of 6
# (student, batch) cases and 10% and 21% behind the fastest in the other two.
CUDA_BF16 = False
CUDA_CHANNELS_LAST = False


class DeviceError(DistillError):
    """A device that is not written as one of :data:`DEVICES`, or that this machine does not have."""


def check_device_spec(spec: str) -> None:
    """Raise unless ``spec`` is written as one of :data:`DEVICES` (whether this machine has it is not checked)."""
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", spec):
        raise DeviceError(f"A device must be one of {', '.join(DEVICES)}, but got {spec!r}.")


def resolve_device(spec: str = "auto") -> torch.device:
    """The device ``spec`` names: ``auto`` is the first CUDA device when torch sees one, else the CPU. A CUDA
    device this machine does not have is a :class:`DeviceError`, raised before any work."""
    check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            seen = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise DeviceError(f"--device {spec} asks for CUDA device {index}, but torch sees {seen} here "
                              f"(torch {torch.__version__}); use --device cpu or auto.")
        device = torch.device("cuda", index)
    return device


def describe_device(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``: what a trial records."""
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (the CPU for a module that has none)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def computes_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA device, or a CPU with AVX512-BF16 or AMX (oneDNN's test);
    elsewhere bf16 autocast would only emulate it, slowly."""
    return device.type == "cuda" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass(frozen=True)
class Placement:
    """Where and how a model trains: ``device``; bf16 autocast (only on a device that :func:`computes_bf16`) and
    channels-last memory format; ``before_step()``, called before every training step (e.g. to wait while another
    process measures latency)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bf16: bool = False
    channels_last: bool = CHANNELS_LAST
    before_step: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.bf16 and not computes_bf16(self.device):
            raise DeviceError(f"bf16 autocast needs a device that computes bf16 natively (CUDA, or a CPU with "
                              f"AVX512-BF16 or AMX), but {self.device} here does not.")

    @classmethod
    def on(cls, spec: str = "auto", *, bf16: bool | None = None, channels_last: bool | None = None,
           before_step: Callable[[], None] | None = None) -> Placement:
        """The placement of device ``spec`` (:func:`resolve_device`); bf16 and channels-last default to
        :data:`CUDA_BF16` and :data:`CUDA_CHANNELS_LAST` on CUDA, to off and :data:`CHANNELS_LAST` on a CPU; bf16 is
        off where asked for on a device that does not :func:`compute it <computes_bf16>`."""
        device = resolve_device(spec)
        cuda = device.type == "cuda"
        wanted = (CUDA_BF16 if cuda else False) if bf16 is None else bf16
        layout = (CUDA_CHANNELS_LAST if cuda else CHANNELS_LAST) if channels_last is None else channels_last
        return cls(device, wanted and computes_bf16(device), layout, before_step)

    def with_native_bf16(self) -> Placement:
        """This placement with bf16 autocast wherever the device computes it natively: for models whose dense
        convolutions gain from it on a CPU too (the built-in teacher trained 1.76x faster so on this project's CPU)."""
        return replace(self, bf16=self.bf16 or computes_bf16(self.device))

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def prepare(self, module: nn.Module) -> nn.Module:
        """``module`` moved to the device (in place), in channels-last format when asked for."""
        module.to(self.device)
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def put(self, tensor: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the device (asynchronously from pinned memory); 4-D images in channels-last format
        when asked for."""
        tensor = tensor.to(self.device, non_blocking=True)
        return tensor.contiguous(memory_format=torch.channels_last) if self.channels_last and tensor.ndim == 4 \
            else tensor

    def autocast(self) -> ContextManager[object]:
        """bf16 autocast on the device when asked for, else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()


@contextmanager
def placed(module: nn.Module | None, device: torch.device) -> Iterator[None]:
    """Within the block, ``module`` (when given) is on ``device``; afterwards it is back where it was, in the
    contiguous memory format (e.g. on the CPU for ONNX export)."""
    if module is None:
        yield
        return
    home = module_device(module)
    module.to(device)
    try:
        yield
    finally:
        module.to(home, memory_format=torch.contiguous_format)
