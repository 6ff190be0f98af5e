"""How well a text student reproduces its teacher: embedding cosine and nearest-neighbour agreement."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextFidelity:
    cosine: float  # mean cosine similarity of student and teacher embeddings of the same text
    neighbour_agreement: float  # mean |top-k neighbours by student ∩ by teacher| / k, among the texts
    k: int


def text_fidelity(student_embeddings: np.ndarray, teacher_embeddings: np.ndarray, k: int = 10) -> TextFidelity:
    """How well a student reproduces the teacher's embeddings (cosine) and its retrieval (neighbour agreement).

    Neighbours are by cosine similarity among the same texts, excluding the text itself; ``k`` is capped at
    ``N − 1``.
    """
    s, t = _unit(student_embeddings), _unit(teacher_embeddings)
    if s.ndim != 2 or t.ndim != 2 or len(s) != len(t) or len(s) < 2:
        raise ValueError(f"Student and teacher embeddings must be (N >= 2, dim) with the same N, but got "
                         f"({s.shape=}, {t.shape=}).")
    cosine = mean_cosine(s, t) if s.shape == t.shape else math.nan
    k = min(k, len(s) - 1)
    overlap = [len(set(a) & set(b)) for a, b in zip(_top_k(s @ s.T, k), _top_k(t @ t.T, k))]
    return TextFidelity(cosine=cosine, neighbour_agreement=float(np.mean(overlap)) / k, k=k)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The mean cosine similarity of the rows of ``a`` and ``b`` (same shape), row by row."""
    return float(_row_cosines(a, b).mean())


def cosine_interval(a: np.ndarray, b: np.ndarray, resamples: int = 1000, level: float = 0.95,
                    seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of :func:`mean_cosine` over the texts (the rows)."""
    cosines = _row_cosines(a, b)
    if len(cosines) == 0 or resamples < 1 or not 0 < level < 1:
        raise ValueError(f"`N >= 1` texts, `resamples >= 1` and `0 < level < 1` must hold, but got ({len(cosines)=}, "
                         f"{resamples=}, {level=}).")
    rows = np.random.default_rng(seed).integers(0, len(cosines), size=(resamples, len(cosines)))
    return [float(q) for q in np.quantile(cosines[rows].mean(axis=1), [(1 - level) / 2, (1 + level) / 2])]


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine similarity of each row of ``a`` with the same row of ``b`` (same shape)."""
    return (_unit(a) * _unit(b)).sum(axis=1)


def constant_cosine(train: np.ndarray, val: np.ndarray) -> float:
    """What a constant guess scores, a text student's chance level: the mean cosine to the ``val`` embeddings of the
    mean direction of the ``train`` embeddings (the one embedding with the highest mean cosine to them)."""
    return mean_cosine(np.broadcast_to(_unit(train).mean(axis=0), np.shape(val)), val)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _top_k(similarity: np.ndarray, k: int) -> np.ndarray:
    np.fill_diagonal(similarity, -np.inf)
    return np.argpartition(-similarity, k - 1, axis=1)[:, :k]
