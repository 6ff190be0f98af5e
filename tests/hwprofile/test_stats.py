from __future__ import annotations

import numpy as np
import pytest

import hwprofile
from hwprofile.stats import LatencyStats, median_rel_ci95


def test_latency_stats_from_known_samples() -> None:
    samples = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    stats = LatencyStats.from_samples(samples, cold_ms=5.0, session_ms=7.0, cv_threshold=0.5)
    assert stats.median_ms == 3.0 and stats.min_ms == 1.0 and stats.mean_ms == 22.0 and stats.max_ms == 100.0
    assert stats.p90_ms == pytest.approx(61.6)  # linear interpolation between 4 and 100
    assert stats.cv == pytest.approx(1.4826 * 1.0 / 3.0)  # MAD = median(|x - 3|) = 1: the outlier doesn't count
    assert stats.stable is True and stats.runs == 5
    assert LatencyStats.from_samples(samples, cold_ms=5.0, session_ms=7.0, cv_threshold=0.4).stable is False


def test_median_confidence_interval_uses_order_statistics() -> None:
    samples = np.arange(1.0, 101.0)[::-1]  # 1..100, order must not matter
    # ranks 50 -/+ 1.96*sqrt(100)/2 = 40.2 .. 59.8 -> the 40th and 60th values: 40 and 60; median 50.5
    assert median_rel_ci95(samples) == pytest.approx(10 / 50.5)
    assert median_rel_ci95(np.full(30, 2.0)) == 0.0
    assert median_rel_ci95(np.array([1.0])) is None


def test_stats_round_trip_through_dicts() -> None:
    stats = LatencyStats.from_samples(np.array([1.0, 2.0, 3.0]), cold_ms=1.0, session_ms=2.0, cv_threshold=0.1)
    assert LatencyStats.from_dict({**stats.to_dict(), "unrelated": 1}) == stats


def test_config_round_trips_through_query_strings() -> None:
    config = hwprofile.MeasureConfig(threads=2, batch=3, dims={"seq": 7}, spinning=False, target_rel_precision=None,
                                     precision="fp16", min_seconds=0.5)
    assert hwprofile.MeasureConfig.from_query(config.to_query()) == config
    assert config.dims_dict == {"seq": 7} and config.setup()["provider"] == "cpu"


@pytest.mark.parametrize(("query", "message"), [
    ({"thread": "2"}, "Unknown option\\(s\\) 'thread'; known: threads"),
    ({"threads": "two"}, "Option 'threads' must be int, but got 'two'"),
    ({"spinning": "maybe"}, "Option 'spinning' must be bool"),
    ({"dims": "seq"}, "Option 'dims' must be dims like 'seq=128"),
    ({"min_seconds": "nan"}, "Option 'min_seconds' must be float"),
    ({"batch": "0"}, "`threads` and `batch` must be >= 1"),
])
def test_bad_query_options_are_named(query: dict[str, str], message: str) -> None:
    with pytest.raises(hwprofile.InvalidOptionError, match=message):
        hwprofile.MeasureConfig.from_query(query)
