"""ResNet students (He et al., CVPR 2016): a stem, stages of residual blocks, global pooling, a linear head.

Also the example of a complete search space: a frozen dataclass of the choices; ``sample`` draws one
architecture per trial with ``trial.suggest_*``; ``smallest`` and ``largest`` bracket every architecture it
can draw; ``build`` returns a module with ``stem``, ``stages`` (an ``nn.ModuleList``, whose outputs feature
distillation pairs with the teacher's maps), ``head`` (the pooled vector) and ``classifier``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from search_spaces._layers import conv_bn_act, strides
from search_spaces._registry import Arch, register_space

BOTTLENECK_REDUCTION = 4  # a bottleneck block narrows to width / 4 inside, as in ResNet-50


def _basic(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [conv_bn_act(cin, cout, 3, stride, "relu"), conv_bn_act(cout, cout, 3, 1, None)]


def _bottleneck(cin: int, cout: int, stride: int) -> list[nn.Module]:
    inner = cout // BOTTLENECK_REDUCTION
    return [conv_bn_act(cin, inner, 1, 1, "relu"), conv_bn_act(inner, inner, 3, stride, "relu"),
            conv_bn_act(inner, cout, 1, 1, None)]


BLOCKS = {"basic": _basic, "bottleneck": _bottleneck}


class ResidualBlock(nn.Module):
    """``relu(body(x) + shortcut(x))``. Body: two 3x3 convs (basic), or a 1x1 conv to width/4, a 3x3 and a 1x1
    back to width (bottleneck); the shortcut is a strided 1x1 conv where the shape changes."""

    def __init__(self, block: str, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"`block` must be one of {', '.join(BLOCKS)}, but got {block=}.")
        self.body = nn.Sequential(*BLOCKS[block](cin, cout, stride))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn_act(cin, cout, 1, stride, None)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """The student. The first block of a stage changes the width and, after the first stage, halves the resolution
    while at least 2x2 remains (inputs over 64 px are halved by the stem too)."""

    def __init__(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        stem_stride, stage_strides = strides(input_shape, len(arch["stages"]))
        self.stem = conv_bn_act(input_shape[0], arch["stem"], arch["stem_kernel"], stem_stride, "relu")
        cin, stages = arch["stem"], []
        for stage, stride in zip(arch["stages"], stage_strides):
            width = stage["width"]
            stages.append(nn.Sequential(*(ResidualBlock(arch["block"], cin if i == 0 else width, width,
                                                        stride if i == 0 else 1) for i in range(stage["depth"]))))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.head(x))


@register_space("resnet")
@dataclass(frozen=True)
class ResNetSpace:
    """Stem width and kernel; one block type for the whole network (basic or bottleneck); per stage: depth and
    width (the stage's output channels, a multiple of 4)."""

    name: str = "resnet"
    stem_widths: tuple[int, ...] = (16, 24, 32)
    stem_kernels: tuple[int, ...] = (3, 5, 7)
    blocks: tuple[str, ...] = tuple(BLOCKS)
    stage_widths: tuple[tuple[int, ...], ...] = ((16, 24, 32), (32, 48, 64), (64, 96, 128))
    depths: tuple[int, ...] = (1, 2, 3)

    def sample(self, trial: Any) -> Arch:
        return {
            "stem": trial.suggest_categorical("stem", list(self.stem_widths)),
            "stem_kernel": trial.suggest_categorical("stem_kernel", list(self.stem_kernels)),
            "block": trial.suggest_categorical("block", list(self.blocks)),
            "stages": [{"depth": trial.suggest_categorical(f"s{i}_depth", list(self.depths)),
                        "width": trial.suggest_categorical(f"s{i}_width", list(widths))}
                       for i, widths in enumerate(self.stage_widths)],
        }

    # A bottleneck block costs less than a basic block of the same widths (its 3x3 conv is 16x narrower), and
    # every other choice costs more as it grows: the extremes are all-minimal bottleneck, all-maximal basic.
    def smallest(self) -> Arch:
        return self._extreme(min, "bottleneck")

    def largest(self) -> Arch:
        return self._extreme(max, "basic")

    def _extreme(self, pick: Any, block: str) -> Arch:
        return {"stem": pick(self.stem_widths), "stem_kernel": pick(self.stem_kernels), "block": block,
                "stages": [{"depth": pick(self.depths), "width": pick(widths)} for widths in self.stage_widths]}

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return ResNet(arch, input_shape, num_classes)
