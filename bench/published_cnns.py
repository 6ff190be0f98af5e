"""The two published Fashion-MNIST CNNs that ``bench/fashion_front.py`` compares the searched students with, as a
search space of two architectures, so that they are built, distilled, exported, measured and tested exactly as a
searched student is (``nas.export_arch``). Rebuilt here from their descriptions (Fashion-MNIST's README table):

- ``two_conv_100k`` — "2 Conv <100K parameters", published test accuracy 0.925: conv 5x5 (32) + ReLU + max-pool,
  conv 5x5 (64) + ReLU + max-pool, one linear layer (83,466 parameters at 28x28).
- ``tf_tutorial`` — TensorFlow's layers tutorial, "2 Conv+pooling", published 0.916: the same two conv blocks,
  then a 1024-unit ReLU layer with dropout 0.4 and the linear head (3.27M parameters at 28x28).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

PUBLISHED = {"two_conv_100k": 0.925, "tf_tutorial": 0.916}  # test accuracy, from Fashion-MNIST's README


class PublishedCNNs:
    """Two architectures, ``{"model": name}`` for each name of :data:`PUBLISHED`."""

    name = "published-cnns"

    def sample(self, trial: Any) -> dict[str, Any]:
        return {"model": trial.suggest_categorical("model", list(PUBLISHED))}

    def smallest(self) -> dict[str, Any]:
        return {"model": "two_conv_100k"}

    def largest(self) -> dict[str, Any]:
        return {"model": "tf_tutorial"}

    def build(self, arch: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        channels, height, width = input_shape
        features = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        flat = 64 * (height // 4) * (width // 4)
        if arch["model"] == "two_conv_100k":
            return nn.Sequential(features, nn.Linear(flat, num_classes))
        return nn.Sequential(features, nn.Linear(flat, 1024), nn.ReLU(), nn.Dropout(0.4), nn.Linear(1024, num_classes))
