from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Spread of one latency measurement, in milliseconds per batch."""

    median_ms: float
    mean_ms: float
    min_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    cv: float  # robust coefficient of variation: 1.4826 * MAD / median (rare OS hiccups don't inflate it)
    runs: int
    cold_ms: float  # the first inference after the session was created
    session_ms: float  # session creation (for TensorRT: engine deserialisation, or its build on a cache miss)
    stable: bool  # cv within the threshold the measurement was taken with; False flags an unstable result
    max_ms: float | None = None
    median_rel_ci95: float | None = None  # half-width of the median's 95% confidence interval / median
    attempts: int = 1  # measurements taken (more than 1 when the first was unstable)
    peak_memory_bytes: int | None = None  # host RSS rise during session creation and runs (see hwprofile.memory)
    peak_gpu_memory_bytes: int | None = None  # device memory taken by the model, on GPU backends

    @classmethod
    def from_samples(cls, samples_ms: np.ndarray, *, cold_ms: float, session_ms: float, cv_threshold: float) -> LatencyStats:
        p50, p90, p95, p99 = np.percentile(samples_ms, [50, 90, 95, 99])
        mad = float(np.median(np.abs(samples_ms - p50)))
        cv = 1.4826 * mad / float(p50) if p50 > 0 else 0.0
        return cls(
            median_ms=float(p50), mean_ms=float(samples_ms.mean()), min_ms=float(samples_ms.min()), p90_ms=float(p90),
            p95_ms=float(p95), p99_ms=float(p99), cv=cv, runs=int(samples_ms.size), cold_ms=cold_ms,
            session_ms=session_ms, stable=cv <= cv_threshold, max_ms=float(samples_ms.max()),
            median_rel_ci95=median_rel_ci95(samples_ms),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        """The inverse of :meth:`to_dict`; keys that are not fields are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def median_rel_ci95(samples: np.ndarray) -> float | None:
    """Half-width of a distribution-free 95% confidence interval of the median, relative to the median.

    The interval runs between the order statistics n/2 ± 1.96·√n/2; None for fewer than 2 samples.
    """
    n = int(np.size(samples))
    if n < 2:
        return None
    ordered = np.sort(samples)
    half = 1.96 * math.sqrt(n) / 2
    low, high = max(0, math.floor(n / 2 - half) - 1), min(n - 1, math.ceil(n / 2 + half) - 1)
    median = float(np.median(ordered))
    return float(ordered[high] - ordered[low]) / 2 / median if median > 0 else None
