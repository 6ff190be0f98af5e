"""Teacher outputs computed once per (teacher, data[, layer]) and memory-mapped: no trial runs the teacher.

Logits are cached as float32 for both splits. Intermediate features (for feature- and relation-based
distillation) are cached for the training split only, reduced as their :class:`FeatureLayer` says and
stored as float16, one file per layer, keyed by the teacher's identity, the data's fingerprint and the
layer's path and reduction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.data import Dataset
from distill.errors import TeacherError
from distill.features import FeatureLayer
from distill.teachers import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherOutputs:
    train: np.ndarray  # (N_train, K) float32 logits, memory-mapped
    val: np.ndarray  # (N_val, K)
    features: Mapping[FeatureLayer, np.ndarray] = field(default_factory=dict)  # (N_train, ...) float16, memory-mapped

    def accuracy(self, data: Dataset) -> float:
        """The teacher's validation accuracy."""
        return float((self.val.argmax(axis=1) == data.y_val).mean())

    @property
    def nbytes(self) -> int:
        """Bytes of every cached array (logits and features): what memory-mapping them can page in."""
        return self.train.nbytes + self.val.nbytes + sum(array.nbytes for array in self.features.values())


def teacher_outputs(teacher: Teacher, data: Dataset, cache_dir: Path,
                    features: Sequence[FeatureLayer] = ()) -> TeacherOutputs:
    """Load the cached logits (and ``features``) of ``teacher`` on ``data``, computing what is missing once.

    Missing features need a teacher that can give them (``teacher.features``, e.g. a PyTorch module); they
    are computed in one pass over the training split, which also yields its logits.
    """
    stem = f"{teacher.identity}-{data.fingerprint}"
    paths = {split: cache_dir / "logits" / f"{stem}-{split}.npy" for split in ("train", "val")}
    layer_paths = {layer: cache_dir / "features" / f"{stem}-{layer.key}.npy" for layer in dict.fromkeys(features)}
    missing = [layer for layer, path in layer_paths.items() if not path.is_file()]
    if missing:
        extract = getattr(teacher, "features", None)
        if extract is None:
            raise TeacherError(f"Feature-based distillation needs the teacher's intermediate outputs, which teacher "
                               f"{teacher.identity!r} ({type(teacher).__name__}) cannot give; use a PyTorch teacher.")
        log.info("Computing teacher features %s on %d samples (once; cached)",
                 ", ".join(layer.key for layer in missing), len(data.x_train))
        logits, arrays = extract(data.x_train, missing)
        for layer, array in arrays.items():
            _save(layer_paths[layer], array)
        if not paths["train"].is_file():
            _save(paths["train"], logits)
    for split, x in (("train", data.x_train), ("val", data.x_val)):
        if not paths[split].is_file():
            log.info("Computing teacher outputs on %d %s samples (once; cached)", len(x), split)
            _save(paths[split], teacher.logits(x).astype(np.float32))
    outputs = TeacherOutputs(**{split: np.load(path, mmap_mode="r") for split, path in paths.items()},
                             features={layer: np.load(path, mmap_mode="r") for layer, path in layer_paths.items()})
    if features:
        log.info("Teacher cache: %d bytes (%s)", outputs.nbytes,
                 ", ".join(f"{layer.key}: {array.nbytes}" for layer, array in outputs.features.items()))
    return outputs


def _save(path: Path, array: np.ndarray) -> None:
    """Write ``array`` atomically: concurrent searches never read a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
