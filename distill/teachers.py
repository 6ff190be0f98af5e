"""Teachers: the built-in CNN (trained once per dataset, cached) or a model file (torch or ONNX)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from distill.data import Dataset
from distill.errors import TeacherError
from distill.features import FeatureLayer, extract

log = logging.getLogger(__name__)


class Teacher(Protocol):
    identity: str  # changes whenever the teacher's outputs could change

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(N, num_classes)`` float32 logits for ``(N, C, H, W)`` normalised images."""


@dataclass
class TorchTeacher:
    module: nn.Module
    identity: str
    batch_size: int = 512

    def __post_init__(self) -> None:
        self.module.eval()

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> np.ndarray:
        chunks = [self.module(torch.from_numpy(x[i:i + self.batch_size])).float().numpy()
                  for i in range(0, len(x), self.batch_size)]
        return np.concatenate(chunks)

    def features(self, x: np.ndarray, layers: Sequence[FeatureLayer]) -> tuple[np.ndarray, dict[FeatureLayer, np.ndarray]]:
        """Logits and the reduced outputs of ``layers`` (float16), from one pass over ``x``."""
        try:
            return extract(self.module, x, layers, self.batch_size)
        except ValueError as error:
            raise TeacherError(f"Teacher {self.identity!r}: {error}") from error


@dataclass
class OnnxTeacher:
    path: Path
    identity: str
    batch_size: int = 512

    def __post_init__(self) -> None:
        import onnxruntime as ort

        try:
            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types
            raise TeacherError(f"ONNX Runtime cannot load teacher {str(self.path)!r}: {error}".splitlines()[0]) from error
        self._input = self._session.get_inputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        chunks = [self._session.run(None, {self._input: x[i:i + self.batch_size]})[0]
                  for i in range(0, len(x), self.batch_size)]
        return np.concatenate(chunks).astype(np.float32)


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
    if spec == "builtin":
        teacher = _builtin_teacher(data, cache_dir, epochs, seed)
    else:
        teacher = _file_teacher(Path(spec).expanduser())
    check_teacher(teacher, data, spec)
    return teacher


def check_teacher(teacher: Teacher, data: Dataset, spec: str) -> None:
    sample = data.x_val[:2]
    try:
        out = teacher.logits(sample)
    except Exception as error:
        raise TeacherError(f"Teacher {spec!r} fails on inputs of shape {tuple(sample.shape)} (the data's "
                           f"N x C x H x W): {error}".splitlines()[0]) from error
    if out.shape != (len(sample), data.num_classes):
        raise TeacherError(f"Teacher {spec!r} maps inputs {tuple(sample.shape)} to {tuple(out.shape)}; expected "
                           f"({len(sample)}, {data.num_classes}): one logit per class of the data.")
    if not np.isfinite(out).all():
        raise TeacherError(f"Teacher {spec!r} produces NaN or infinite logits.")


def _file_teacher(path: Path) -> Teacher:
    if not path.is_file():
        raise TeacherError(f"Teacher file {str(path)!r} does not exist (expected 'builtin', a .onnx file, "
                           "a TorchScript file or a torch.save'd nn.Module).")
    identity = "file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if path.suffix == ".onnx":
        return OnnxTeacher(path, identity)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception:  # not TorchScript: try a pickled module
        try:
            module = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:
            raise TeacherError(f"Cannot load teacher {str(path)!r} as ONNX, TorchScript or a torch.save'd module: "
                               f"{error}".splitlines()[0]) from error
    if not isinstance(module, nn.Module):
        raise TeacherError(f"Teacher {str(path)!r} holds a {type(module).__name__}, not an nn.Module "
                           "(save the module itself, not its state_dict).")
    return TorchTeacher(module, identity)


def _builtin_teacher(data: Dataset, cache_dir: Path, epochs: int, seed: int) -> TorchTeacher:
    from distill.train import TrainConfig, train

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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(module.state_dict(), tmp)
        tmp.replace(path)
    return TorchTeacher(module, identity)
