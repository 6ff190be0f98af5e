"""Teacher outputs computed once per (teacher, data[, views][, layer]) and memory-mapped: no trial runs the teacher.

Logits are cached as float32 for both splits; with augmented :class:`~distill.image.augment.Views`, the training
split's are the logits of every view of every sample ((V, N, K), keyed by the views too), so that distillation on
augmented images never runs the teacher either. Intermediate features (for feature- and relation-based
distillation) are cached for the training split only, reduced as their :class:`FeatureLayer` says and
stored as float16, one file per layer, keyed by the teacher's identity, the data's fingerprint and the
layer's path and reduction.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from distill.arrays import cached_arrays
from distill.device import placed
from distill.errors import TeacherError
from distill.features import FeatureLayer
from distill.image.augment import Views
from distill.image.data import Dataset, read_rows
from distill.image.teachers import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherOutputs:
    # (N_train, K) float32 logits, memory-mapped; with views (V * N_train, K): view v of sample i in row v * N_train + i
    train: np.ndarray
    val: np.ndarray  # (N_val, K)
    features: Mapping[FeatureLayer, np.ndarray] = field(default_factory=dict)  # (N_train, ...) float16, memory-mapped
    views: Views | None = None  # the augmented views of the training split that ``train`` holds

    def accuracy(self, data: Dataset) -> float:
        """The teacher's validation accuracy."""
        return float((self.val.argmax(axis=1) == data.val.y).mean())

    @property
    def nbytes(self) -> int:
        """Bytes of every cached array (logits and features): what memory-mapping them can page in."""
        return self.train.nbytes + self.val.nbytes + sum(array.nbytes for array in self.features.values())


def teacher_outputs(teacher: Teacher, data: Dataset, cache_dir: Path, features: Sequence[FeatureLayer] = (), *,
                    device: torch.device | str = "cpu", views: Views | None = None) -> TeacherOutputs:
    """Load the cached logits (and ``features``) of ``teacher`` on ``data``, computing what is missing once.

    With ``views``, the training logits are those of every view of every sample, computed in batches with a
    progress bar; features are then refused (they would be needed per view too).

    Missing features need a teacher that can give them (``teacher.features``, e.g. a PyTorch module); they
    are computed in one pass over the training split, which also yields its logits. The teacher sees the
    images normalised, one batch at a time; a PyTorch teacher computes them on ``device`` (then goes back).
    """
    if views is not None and features:
        raise ValueError(f"Teacher features are cached for the unaugmented training images only, but views "
                         f"{views.key} were asked for with features {[layer.key for layer in features]}; "
                         "feature-based distillation needs no augmentation.")
    stem = f"{teacher.identity}-{data.fingerprint}"
    paths: dict[str | FeatureLayer, Path] = {split: cache_dir / "logits" / f"{stem}-{split}.npy"
                                             for split in ("train", "val")}
    if views is not None:
        paths["train"] = cache_dir / "logits" / f"{stem}-train-{views.key}.npy"
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
        if views is not None and "train" in missing:
            computed["train"] = _view_logits(teacher, data, views)
        for name, split in (("train", data.train), ("val", data.val)):
            if name in missing and name not in computed:
                log.info("Computing teacher outputs on %d %s samples (once; cached)", len(split), name)
                logits = [teacher.logits(batch) for batch in data.batches(split)]
                computed[name] = np.concatenate(logits).astype(np.float32)
        return computed

    def compute_on_device(missing: Sequence[str | FeatureLayer]) -> dict[str | FeatureLayer, np.ndarray]:
        with placed(getattr(teacher, "module", None), torch.device(device)):
            return compute(missing)

    arrays = cached_arrays(paths, compute_on_device)
    train = arrays["train"]
    outputs = TeacherOutputs(train=train.reshape(-1, train.shape[-1]), val=arrays["val"],
                             features={layer: arrays[layer] for layer in features}, views=views)
    if features:
        log.info("Teacher cache: %d bytes (%s)", outputs.nbytes,
                 ", ".join(f"{layer.key}: {array.nbytes}" for layer, array in outputs.features.items()))
    return outputs


def _view_logits(teacher: Teacher, data: Dataset, views: Views) -> np.ndarray:
    """The teacher's float32 logits of every view of every training sample, (V, N, K), one batch at a time."""
    from tqdm import tqdm

    split, size = data.train, data.eval_batch_size
    out = np.empty((views.count, len(split), data.num_classes), dtype=np.float32)
    log.info("Computing teacher outputs on %d views of %d training samples (once; cached)", views.count, len(split))
    with tqdm(total=views.count * len(split), desc="Teacher views", unit="img", file=sys.stderr, leave=False,
              disable=None) as bar:
        for start in range(0, len(split), size):
            samples = np.arange(start, min(start + size, len(split)))
            x = read_rows(split.x, samples)
            for view in range(views.count):
                out[view, samples] = teacher.logits(data.normalise(views.apply(x, samples, view)))
                bar.update(len(samples))
    return out
