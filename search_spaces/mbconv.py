"""MobileNetV2/V3-style students: a stem, stages of inverted-residual (MBConv) blocks, a head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from search_spaces._layers import conv_bn_act, strides
from search_spaces._registry import Arch, register_space


class SqueezeExcite(nn.Module):
    """Channel attention of MobileNetV3: global pool, bottleneck, hard-sigmoid gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        reduced = max(8, channels // 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, reduced, 1),
            nn.ReLU(),
            nn.Conv2d(reduced, channels, 1),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion, k x k depthwise, optional SE, linear 1x1 projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, se: bool, act: str) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1, 1, act))
        layers.append(conv_bn_act(hidden, hidden, kernel, stride, act, groups=hidden))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn_act(hidden, cout, 1, 1, None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MBConvNet(nn.Module):
    """The student. ``stem``, ``stages`` and ``head`` are separate so their features can be tapped."""

    def __init__(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        stem_stride, stage_strides = strides(input_shape, len(arch["stages"]))
        self.stem = conv_bn_act(input_shape[0], arch["stem"], 3, stem_stride, "hswish")
        cin = arch["stem"]
        stages = []
        for stage, stride in zip(arch["stages"], stage_strides):
            blocks = []
            for depth in range(stage["depth"]):
                blocks.append(
                    MBConvBlock(cin, stage["width"], stage["kernel"], stride if depth == 0 else 1,
                                stage["expand"], stage["se"], stage["act"])
                )
                cin = stage["width"]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(conv_bn_act(cin, arch["head"], 1, 1, "hswish"), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(arch["head"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.head(x))


@register_space("mbconv")
@dataclass(frozen=True)
class MBConvSpace:
    """Per stage: depth, width, kernel size, expansion ratio, squeeze-excitation, activation."""

    name: str = "mbconv"
    stem_widths: tuple[int, ...] = (8, 16, 24)
    head_widths: tuple[int, ...] = (32, 64, 128)
    stage_widths: tuple[tuple[int, ...], ...] = ((8, 16, 24), (16, 24, 32), (24, 32, 48))
    depths: tuple[int, ...] = (1, 2, 3)
    kernels: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[int, ...] = (1, 2, 4, 6)
    activations: tuple[str, ...] = ("relu", "hswish")

    def sample(self, trial: Any) -> Arch:
        stages = []
        for i, widths in enumerate(self.stage_widths):
            stages.append({
                "depth": trial.suggest_categorical(f"s{i}_depth", list(self.depths)),
                "width": trial.suggest_categorical(f"s{i}_width", list(widths)),
                "kernel": trial.suggest_categorical(f"s{i}_kernel", list(self.kernels)),
                "expand": trial.suggest_categorical(f"s{i}_expand", list(self.expand_ratios)),
                "se": trial.suggest_categorical(f"s{i}_se", [False, True]),
                "act": trial.suggest_categorical(f"s{i}_act", list(self.activations)),
            })
        return {
            "stem": trial.suggest_categorical("stem", list(self.stem_widths)),
            "stages": stages,
            "head": trial.suggest_categorical("head", list(self.head_widths)),
        }

    def smallest(self) -> Arch:
        stage = {"depth": min(self.depths), "kernel": min(self.kernels), "expand": min(self.expand_ratios),
                 "se": False, "act": "relu"}
        return {
            "stem": min(self.stem_widths),
            "stages": [{**stage, "width": min(widths)} for widths in self.stage_widths],
            "head": min(self.head_widths),
        }

    def largest(self) -> Arch:
        stage = {"depth": max(self.depths), "kernel": max(self.kernels), "expand": max(self.expand_ratios),
                 "se": True, "act": "hswish"}
        return {
            "stem": max(self.stem_widths),
            "stages": [{**stage, "width": max(widths)} for widths in self.stage_widths],
            "head": max(self.head_widths),
        }

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return MBConvNet(arch, input_shape, num_classes)
