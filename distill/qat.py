"""Quantization-aware fine-tuning: fake quantization in PyTorch that mimics ONNX Runtime's static QDQ quantization.

ONNX Runtime's ``quantize_static`` (QDQ, per-channel, int8 weights, uint8 activations) rounds each output channel of a
Conv or Gemm weight to symmetric int8 (scale ``max|w| / 127``, zero point 0) and each activation that feeds one to
uint8 over its calibrated ``[min, max]`` (widened to hold 0). :func:`prepare_qat` makes a student compute that way while
it trains: the weight of every Conv/Linear through a parametrization, its input through a forward pre-hook whose
min/max observer follows the batches by an exponential moving average in training mode and is frozen in eval mode.
The rounding passes gradients straight through. Per-channel rounding commutes with the per-channel scale of a folded
BatchNorm, so rounding the unfolded weight is what the exported, folded file gets.

:func:`remove_qat` leaves plain modules with the fine-tuned float weights: an export of them quantized by ONNX Runtime
takes its weights from QAT and its activation ranges from ONNX Runtime's own calibration (the observers only shape
training). Core torch ops only (``torch.fake_quantize_per_*_affine``, ``torch.nn.utils.parametrize``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

WEIGHT_RANGE = (-127, 127)  # ONNX Runtime's symmetric int8 weights
ACTIVATION_RANGE = (0, 255)  # its asymmetric uint8 activations
OBSERVER_MOMENTUM = 0.01  # the weight of a batch's min/max in the moving average of an activation's range
QUANTIZED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # their weights' axis 0 is the output channel


def _stored_scale(scale: torch.Tensor) -> torch.Tensor:
    """A float64 scale as ONNX Runtime stores it: float32, and 1 for an empty range (e.g. an all-zero channel)."""
    return torch.where(scale < torch.finfo(torch.float32).tiny, 1.0, scale).float()


class WeightFakeQuant(nn.Module):
    """A parametrization of a Conv/Linear weight: per-output-channel symmetric int8 fake quantization."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        low, high = WEIGHT_RANGE
        absmax = weight.detach().abs().flatten(1).amax(1).double()
        scale = _stored_scale(2 * absmax / (high - low))  # ONNX Runtime's [-absmax, absmax] onto [-127, 127]
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, low, high)


class ActivationFakeQuant(nn.Module):
    """Asymmetric uint8 fake quantization over an observed range: the moving average of the batches' min and max in
    training mode, frozen in eval mode; the identity until the first training batch."""

    def __init__(self, momentum: float = OBSERVER_MOMENTUM) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"`0 < momentum <= 1` must hold, but got {momentum=}.")
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("observed", torch.tensor(False))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Move the range towards the batch's min and max (take them, on the first batch)."""
        low, high = torch.aminmax(x.detach().float())
        weight = torch.where(self.observed, self.momentum, 1.0)  # no host sync: a CUDA step does not wait
        self.min_val.lerp_(low, weight)
        self.max_val.lerp_(high, weight)
        self.observed.fill_(True)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale and zero point ONNX Runtime computes for the range ``[min_val, max_val]``."""
        low, high = ACTIVATION_RANGE
        rmin, rmax = self.min_val.clamp(max=0).double(), self.max_val.clamp(min=0).double()
        scale = (rmax - rmin) / (high - low)
        zero_point = torch.round(low - rmin / torch.where(scale < torch.finfo(torch.float32).tiny, 1.0, scale))
        return _stored_scale(scale).reshape(1), zero_point.clamp(low, high).to(torch.int32).reshape(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.observe(x)
        elif not bool(self.observed):
            return x
        scale, zero_point = self.qparams()
        low, high = ACTIVATION_RANGE
        return torch.fake_quantize_per_tensor_affine(x.float(), scale, zero_point, low, high).to(x.dtype)


def _quantize_input(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (module.input_quant(inputs[0]), *inputs[1:])


def quantized_layers(model: nn.Module) -> list[nn.Module]:
    """The Conv/Linear layers of ``model`` whose weights and inputs :func:`prepare_qat` fake-quantizes."""
    return [module for module in model.modules() if isinstance(module, QUANTIZED_LAYERS)]


def prepare_qat(model: nn.Module, momentum: float = OBSERVER_MOMENTUM) -> nn.Module:
    """Fake-quantize ``model`` in place as ONNX Runtime's static int8 quantization will: the weight of every Conv/Linear
    per output channel (symmetric int8), its input per tensor (uint8 over a moving-average min/max); returns it."""
    for layer in quantized_layers(model):
        if hasattr(layer, "input_quant"):
            raise ValueError(f"{type(layer).__name__} is fake-quantized already: prepare_qat() a model once.")
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant())
        layer.input_quant = ActivationFakeQuant(momentum).to(layer.weight.device)
        layer.input_quant.hook = layer.register_forward_pre_hook(_quantize_input)
    return model


def remove_qat(model: nn.Module) -> nn.Module:
    """Undo :func:`prepare_qat` in place: plain modules again, holding the fine-tuned float weights; returns ``model``."""
    for layer in quantized_layers(model):
        if hasattr(layer, "input_quant"):
            layer.input_quant.hook.remove()
            del layer.input_quant
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    return model


@contextmanager
def quantization_aware(model: nn.Module, momentum: float = OBSERVER_MOMENTUM) -> Iterator[nn.Module]:
    """Within the block ``model`` is fake-quantized (:func:`prepare_qat`); afterwards it is plain again
    (:func:`remove_qat`), with the weights the block trained."""
    prepare_qat(model, momentum)
    try:
        yield model
    finally:
        remove_qat(model)

