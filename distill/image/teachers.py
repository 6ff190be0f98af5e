"""Image teachers: the :class:`Teacher` protocol and teachers loaded from a model file (torch or ONNX).

The built-in teacher, trained once per dataset, is in ``distill.image.builtin``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from distill.errors import TeacherError
from distill.features import FeatureLayer, extract, predict
from distill.image.data import Dataset


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

    def logits(self, x: np.ndarray) -> np.ndarray:
        return predict(self.module, x, self.batch_size)

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


def check_teacher(teacher: Teacher, data: Dataset, spec: str) -> None:
    """Run ``teacher`` on two samples: it must map the data's images to one finite logit per class."""
    sample = data.normalise(data.val.x[:2])
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


def file_teacher(path: Path) -> Teacher:
    """An ONNX, TorchScript or ``torch.save``'d teacher from ``path``, identified by a hash of its bytes."""
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
