"""Augmented views of training images, each a deterministic function of (seed, sample, view).

A view is a random crop of the image padded by :attr:`Views.pad` pixels on every side (zeros), mirrored left to
right or not (``standard``; ``crop`` never mirrors, for data where a mirror changes the class, e.g. digits). Its
crop offsets and mirror bit come from a counter-based hash of (seed, sample index, view index), so the teacher-output
cache can hold the teacher's logits for views ``0..V-1`` of every sample and a student that trains on a view later
reads exactly the image the teacher saw (the FKD idea: Shen & Xing, ECCV 2022). Views are applied to raw (uint8)
batches on the fly, in one vectorised gather.

Sample ``i`` in epoch ``e`` takes view ``(e + offset_i) mod V`` (:meth:`Views.cycle`), ``offset_i`` from the same
hash, so a budget shorter than an epoch already sees every view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

AUGMENTATIONS = ("none", "crop", "standard")
_OFFSET_SALT = 0x5EED0FF5E7  # hashes the per-sample view offsets apart from the views' crops
_MASK64 = (1 << 64) - 1


def default_pad(height: int, width: int) -> int:
    """Crop padding for an image size: 4 px at 28-32 px, scaled with the smaller side (1 px at 8 px, 12 at 96)."""
    return max(1, round(min(height, width) / 8))


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 that scatters every input bit over the output."""
    with np.errstate(over="ignore"):  # multiplication modulo 2**64 is the point
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def view_hash(seed: int, samples: np.ndarray, views: np.ndarray | int, salt: int = 0) -> np.ndarray:
    """A uint64 hash of each (``seed``, sample, view) triple (``views`` broadcast against ``samples``)."""
    key = _mix(np.full(np.shape(samples), (seed ^ salt ^ 0x9E3779B97F4A7C15) & _MASK64, dtype=np.uint64))
    key = _mix(key ^ np.asarray(samples).astype(np.uint64))
    return _mix(key ^ np.broadcast_to(np.asarray(views), np.shape(samples)).astype(np.uint64))


@dataclass(frozen=True)
class Views:
    """``count`` augmented views of every training image: crops of the image padded by ``pad`` pixels, mirrored
    (``kind == "standard"``) or not (``"crop"``), drawn from ``seed``."""

    kind: str
    count: int
    seed: int
    pad: int

    def __post_init__(self) -> None:
        if self.kind not in AUGMENTATIONS[1:] or self.count < 1 or self.pad < 0:
            raise ValueError(f"Views need a kind in {AUGMENTATIONS[1:]}, `count >= 1` and `pad >= 0`, but got "
                             f"({self.kind=}, {self.count=}, {self.pad=}).")

    @classmethod
    def of(cls, kind: str, image_shape: tuple[int, int, int], count: int, seed: int) -> Views | None:
        """The views of ``kind`` (one of :data:`AUGMENTATIONS`; ``none``: no views) for images of ``image_shape``
        (C, H, W), padded by :func:`default_pad`."""
        if kind not in AUGMENTATIONS:
            raise ValueError(f"Unknown augmentation {kind!r}; expected one of {', '.join(AUGMENTATIONS)}.")
        return None if kind == "none" else cls(kind, count, seed, default_pad(*image_shape[1:]))

    @property
    def key(self) -> str:
        """Identifies the views (part of the teacher-output cache's key)."""
        return f"{self.kind}-v{self.count}-p{self.pad}-s{self.seed}"

    def params(self, samples: np.ndarray, views: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row offset, column offset, mirrored) of each sample's view: offsets in ``0..2*pad``, into the padded
        image; mirrored only for ``standard``."""
        h = view_hash(self.seed, samples, views)
        span = np.uint64(2 * self.pad + 1)
        mirrored = ((h >> np.uint64(40)) & np.uint64(1)).astype(bool) & (self.kind == "standard")
        return (h % span).astype(np.int64), ((h >> np.uint64(20)) % span).astype(np.int64), mirrored

    def offsets(self, samples: np.ndarray) -> np.ndarray:
        """Each sample's view offset in ``0..count-1``: where its cycle through the views starts."""
        return (view_hash(self.seed, samples, 0, _OFFSET_SALT) % np.uint64(self.count)).astype(np.int64)

    def cycle(self, samples: np.ndarray, epoch: int) -> np.ndarray:
        """The view each of ``samples`` takes in ``epoch``: ``(epoch + offset) mod count``."""
        return (epoch + self.offsets(samples)) % self.count

    def of_epoch(self, x: torch.Tensor, samples: np.ndarray, epoch: int) -> tuple[torch.Tensor, np.ndarray]:
        """The views that training samples ``samples`` take in ``epoch`` (:meth:`cycle`), of their raw images ``x``
        (a CPU tensor), and which views they are."""
        views = self.cycle(samples, epoch)
        return torch.from_numpy(self.apply(x.numpy(), samples, views)), views

    def apply(self, x: np.ndarray, samples: np.ndarray, views: np.ndarray | int) -> np.ndarray:
        """Views ``views`` of images ``x`` (N, C, H, W; of training samples ``samples``), in ``x``'s dtype."""
        n, channels, height, width = x.shape
        p = self.pad
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        top, left, mirrored = self.params(np.asarray(samples), views)
        rows = top[:, None] + np.arange(height)
        cols = left[:, None] + np.arange(width)
        cols = np.where(mirrored[:, None], cols[:, ::-1], cols)
        return padded[np.arange(n)[:, None, None, None], np.arange(channels)[None, :, None, None],
                      rows[:, None, :, None], cols[:, None, None, :]]
