"""Pieces the image spaces share: conv + BatchNorm + activation, and where the resolution halves."""

from __future__ import annotations

import torch.nn as nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int, act: str | None, groups: int = 1) -> nn.Sequential:
    """A bias-free ``kernel x kernel`` convolution ("same" padding), BatchNorm, then ``act`` unless None."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


def strides(input_shape: tuple[int, int, int], num_stages: int) -> tuple[int, list[int]]:
    """The stem's stride and each stage's: the stem halves inputs larger than 64 px, and every stage after the
    first halves the resolution while at least 2x2 remains (8x8 digits end at 2x2, 96x96 images at 12x12)."""
    size = min(input_shape[1:])
    stem = 2 if size > 64 else 1
    size = -(-size // stem)
    stages = []
    for index in range(num_stages):
        stride = 2 if index > 0 and size >= 4 else 1
        size = -(-size // stride)
        stages.append(stride)
    return stem, stages
