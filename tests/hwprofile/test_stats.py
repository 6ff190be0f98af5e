from __future__ import annotations

import numpy as np
import pytest

from hwprofile.stats import median_rel_ci95


def test_median_confidence_interval_uses_order_statistics() -> None:
    samples = np.arange(1.0, 101.0)[::-1]  # 1..100, order must not matter
    # ranks 50 -/+ 1.96*sqrt(100)/2 = 40.2 .. 59.8 -> the 40th and 60th values: 40 and 60; median 50.5
    assert median_rel_ci95(samples) == pytest.approx(10 / 50.5)
    assert median_rel_ci95(np.full(30, 2.0)) == 0.0
    assert median_rel_ci95(np.array([1.0])) is None
