"""Where training runs: the device (``auto``, ``cpu``, ``cuda``, ``cuda:N``), bf16 autocast and channels-last on CUDA,
and a hook before every training step.

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
from dataclasses import dataclass, field
from typing import ContextManager

import torch
import torch.nn as nn

from distill.errors import DistillError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
# On CUDA, by default: bf16 autocast and channels-last (bench/gpu_check.py measures both against fp32/contiguous).
CUDA_BF16 = True
CUDA_CHANNELS_LAST = True


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


@dataclass(frozen=True)
class Placement:
    """Where and how a model trains: ``device``; bf16 autocast and channels-last memory format (CUDA only);
    ``before_step()``, called before every training step (e.g. to wait while another process measures latency)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bf16: bool = False
    channels_last: bool = False
    before_step: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.device.type != "cuda" and (self.bf16 or self.channels_last):
            raise DeviceError(f"bf16 autocast and channels-last are for CUDA devices, but got {self.device} with "
                              f"({self.bf16=}, {self.channels_last=}).")

    @classmethod
    def on(cls, spec: str = "auto", *, bf16: bool | None = None, channels_last: bool | None = None,
           before_step: Callable[[], None] | None = None) -> Placement:
        """The placement of device ``spec`` (:func:`resolve_device`); on CUDA, bf16 and channels-last default to
        :data:`CUDA_BF16` and :data:`CUDA_CHANNELS_LAST`, elsewhere they are off."""
        device = resolve_device(spec)
        cuda = device.type == "cuda"
        return cls(device, cuda and (CUDA_BF16 if bf16 is None else bf16),
                   cuda and (CUDA_CHANNELS_LAST if channels_last is None else channels_last), before_step)

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
