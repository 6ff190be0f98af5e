"""The median's confidence interval: the protocol stops on it, :class:`~hwprofile.LatencyStats` reports it."""

from __future__ import annotations

import math

import numpy as np


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
