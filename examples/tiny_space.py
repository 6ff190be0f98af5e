"""A tiny image search space: a stack of conv layers. Try it with

    nas search --space examples/tiny_space.py:TinySpace --trials 2 --epochs 1
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

DEPTHS = (1, 2, 3)
WIDTHS = (8, 16, 32)
KERNELS = (3, 5)


class TinySpace:
    """Depth x (conv, BatchNorm, ReLU) of one width and kernel size, global average pooling, a linear head."""

    name = "tiny"

    def sample(self, trial: Any) -> dict[str, Any]:
        """One architecture per Optuna trial, drawn with trial.suggest_*; it must be JSON-serialisable."""
        return {"depth": trial.suggest_categorical("depth", list(DEPTHS)),
                "width": trial.suggest_categorical("width", list(WIDTHS)),
                "kernel": trial.suggest_categorical("kernel", list(KERNELS))}

    def smallest(self) -> dict[str, Any]:
        """The cheapest architecture: the search measures it first to check the latency budget."""
        return {"depth": min(DEPTHS), "width": min(WIDTHS), "kernel": min(KERNELS)}

    def largest(self) -> dict[str, Any]:
        """The most expensive architecture."""
        return {"depth": max(DEPTHS), "width": max(WIDTHS), "kernel": max(KERNELS)}

    def build(self, arch: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        """A module mapping (N, *input_shape) images to (N, num_classes) logits; it must export to ONNX."""
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for _ in range(arch["depth"]):
            layers += [nn.Conv2d(channels, arch["width"], arch["kernel"], padding=arch["kernel"] // 2, bias=False),
                       nn.BatchNorm2d(arch["width"]), nn.ReLU()]
            channels = arch["width"]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
