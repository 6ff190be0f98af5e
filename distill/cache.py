"""Teacher outputs computed once per (teacher, data) and memory-mapped: no trial runs the teacher."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.data import Dataset
from distill.teachers import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherOutputs:
    train: np.ndarray  # (N_train, K) float32 logits, memory-mapped
    val: np.ndarray  # (N_val, K)

    def accuracy(self, data: Dataset) -> float:
        """The teacher's validation accuracy."""
        return float((self.val.argmax(axis=1) == data.y_val).mean())


def teacher_outputs(teacher: Teacher, data: Dataset, cache_dir: Path) -> TeacherOutputs:
    """Load the cached logits of ``teacher`` on ``data``, computing and caching them on first use."""
    stem = cache_dir / "logits" / f"{teacher.identity}-{data.fingerprint}"
    paths = {split: stem.with_name(f"{stem.name}-{split}.npy") for split in ("train", "val")}
    if not all(path.is_file() for path in paths.values()):
        log.info("Computing teacher outputs on %d samples (once; cached)", len(data.x_train) + len(data.x_val))
        stem.parent.mkdir(parents=True, exist_ok=True)
        for split, x in (("train", data.x_train), ("val", data.x_val)):
            tmp = paths[split].with_suffix(".tmp.npy")
            np.save(tmp, teacher.logits(x).astype(np.float32))
            tmp.replace(paths[split])
    return TeacherOutputs(**{split: np.load(path, mmap_mode="r") for split, path in paths.items()})
