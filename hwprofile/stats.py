from __future__ import annotations

from dataclasses import asdict, dataclass
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
    session_ms: float  # session creation
    stable: bool  # cv within the threshold the measurement was taken with

    @classmethod
    def from_samples(cls, samples_ms: np.ndarray, *, cold_ms: float, session_ms: float, cv_threshold: float) -> LatencyStats:
        p50, p90, p95, p99 = np.percentile(samples_ms, [50, 90, 95, 99])
        mad = float(np.median(np.abs(samples_ms - p50)))
        cv = 1.4826 * mad / float(p50) if p50 > 0 else 0.0
        return cls(
            median_ms=float(p50), mean_ms=float(samples_ms.mean()), min_ms=float(samples_ms.min()), p90_ms=float(p90),
            p95_ms=float(p95), p99_ms=float(p99), cv=cv, runs=int(samples_ms.size), cold_ms=cold_ms,
            session_ms=session_ms, stable=cv <= cv_threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
