"""The built-in teacher, a small CNN trained once per dataset and cached, and :func:`load_teacher`, which picks it
or a model file."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from distill.arrays import write_atomically
from distill.image.data import Dataset
from distill.image.teachers import Teacher, TorchTeacher, check_teacher, file_teacher
from distill.image.train import TrainConfig, train

log = logging.getLogger(__name__)


class TeacherCNN(nn.Module):
    """The built-in teacher: three VGG-style blocks of two 3x3 convolutions, for any image size."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = input_shape[0], min(input_shape[1:])
        for width in widths:
            for cin in (channels, width):
                layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load_teacher(spec: str, data: Dataset, cache_dir: Path, *, epochs: int = 30, seed: int = 0) -> Teacher:
    """``builtin`` (trained on ``data`` once, cached under ``cache_dir``) or a path to a model file.

    The teacher is run on two samples to check that it maps the data's images to its classes.
    """
    teacher = builtin_teacher(data, cache_dir, epochs, seed) if spec == "builtin" else file_teacher(Path(spec).expanduser())
    check_teacher(teacher, data, spec)
    return teacher


def builtin_teacher(data: Dataset, cache_dir: Path, epochs: int, seed: int) -> TorchTeacher:
    """A :class:`TeacherCNN` trained on ``data`` for ``epochs``, loaded from ``cache_dir`` when it was trained before."""
    identity = f"builtin-{data.fingerprint}-e{epochs}-s{seed}"
    path = cache_dir / "teachers" / f"{identity}.pt"
    torch.manual_seed(seed)  # the same data and seed give the same teacher
    module = TeacherCNN(data.input_shape, data.num_classes)
    if path.is_file():
        module.load_state_dict(torch.load(path, map_location="cpu"))
        log.info("Loaded the cached built-in teacher %s", path)
    else:
        log.info("Training the built-in teacher on %s for %d epochs (once; cached)", data.source, epochs)
        train(module, data, None, TrainConfig(epochs=epochs, lr=2e-3, seed=seed))
        write_atomically(path, lambda tmp: torch.save(module.state_dict(), tmp))
    return TorchTeacher(module, identity)
