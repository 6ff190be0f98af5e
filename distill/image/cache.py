"""Teacher outputs computed once per (teacher, data[, layer]) and memory-mapped: no trial runs the teacher.

Logits are cached as float32 for both splits. Intermediate features (for feature- and relation-based
distillation) are cached for the training split only, reduced as their :class:`FeatureLayer` says and
stored as float16, one file per layer, keyed by the teacher's identity, the data's fingerprint and the
layer's path and reduction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.arrays import cached_arrays
from distill.errors import TeacherError
from distill.features import FeatureLayer
from distill.image.data import Dataset
from distill.image.teachers import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherOutputs:
    train: np.ndarray  # (N_train, K) float32 logits, memory-mapped
    val: np.ndarray  # (N_val, K)
    features: Mapping[FeatureLayer, np.ndarray] = field(default_factory=dict)  # (N_train, ...) float16, memory-mapped

    def accuracy(self, data: Dataset) -> float:
        """The teacher's validation accuracy."""
        return float((self.val.argmax(axis=1) == data.val.y).mean())

    @property
    def nbytes(self) -> int:
        """Bytes of every cached array (logits and features): what memory-mapping them can page in."""
        return self.train.nbytes + self.val.nbytes + sum(array.nbytes for array in self.features.values())


def teacher_outputs(teacher: Teacher, data: Dataset, cache_dir: Path,
                    features: Sequence[FeatureLayer] = ()) -> TeacherOutputs:
    """Load the cached logits (and ``features``) of ``teacher`` on ``data``, computing what is missing once.

    Missing features need a teacher that can give them (``teacher.features``, e.g. a PyTorch module); they
    are computed in one pass over the training split, which also yields its logits. The teacher sees the
    images normalised, one batch at a time.
    """
    stem = f"{teacher.identity}-{data.fingerprint}"
    paths: dict[str | FeatureLayer, Path] = {split: cache_dir / "logits" / f"{stem}-{split}.npy"
                                             for split in ("train", "val")}
    paths |= {layer: cache_dir / "features" / f"{stem}-{layer.key}.npy" for layer in features}

    def compute(missing: Sequence[str | FeatureLayer]) -> dict[str | FeatureLayer, np.ndarray]:
        computed: dict[str | FeatureLayer, np.ndarray] = {}
        if layers := [key for key in missing if isinstance(key, FeatureLayer)]:
            extract = getattr(teacher, "features", None)
            if extract is None:
                raise TeacherError(f"Feature-based distillation needs the teacher's intermediate outputs, which "
                                   f"teacher {teacher.identity!r} ({type(teacher).__name__}) cannot give; use a "
                                   "PyTorch teacher.")
            log.info("Computing teacher features %s on %d samples (once; cached)",
                     ", ".join(layer.key for layer in layers), len(data.train))
            parts = [extract(batch, layers) for batch in data.batches(data.train)]
            computed["train"] = np.concatenate([logits for logits, _ in parts])
            computed |= {layer: np.concatenate([arrays[layer] for _, arrays in parts]) for layer in layers}
        for name, split in (("train", data.train), ("val", data.val)):
            if name in missing and name not in computed:
                log.info("Computing teacher outputs on %d %s samples (once; cached)", len(split), name)
                logits = [teacher.logits(batch) for batch in data.batches(split)]
                computed[name] = np.concatenate(logits).astype(np.float32)
        return computed

    arrays = cached_arrays(paths, compute)
    outputs = TeacherOutputs(train=arrays["train"], val=arrays["val"],
                             features={layer: arrays[layer] for layer in features})
    if features:
        log.info("Teacher cache: %d bytes (%s)", outputs.nbytes,
                 ", ".join(f"{layer.key}: {array.nbytes}" for layer, array in outputs.features.items()))
    return outputs
