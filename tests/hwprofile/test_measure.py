"""The measurement protocol on a scripted backend: deterministic stopping, repeating and flagging."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import hwprofile
from hwprofile.measure import timed_runs
from tests.hwprofile.conftest import QUICK, Scripted


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"scripted backends do not read the file")
    return path


def test_stops_exactly_at_min_runs_and_reports_known_statistics(model: Path, scripted: Scripted) -> None:
    config = scripted(lambda call: [1.0, 2.0, 3.0, 4.0][call % 4])
    stats = hwprofile.measure_latency(model, dataclasses.replace(config, cv_threshold=1.0))
    assert stats.runs == 20 and stats.attempts == 1
    assert stats.min_ms == 1.0 and stats.max_ms == 4.0 and stats.median_ms == 2.5 and stats.mean_ms == 2.5
    assert stats.cold_ms >= 0 and stats.session_ms >= 0


def test_an_unstable_attempt_is_repeated_and_the_steady_one_kept(model: Path, scripted: Scripted) -> None:
    # call 1 is the cold run, calls 2..21 the first attempt (noisy), calls from 22 on the second (steady)
    config = scripted(lambda call: (1.0 if call % 2 else 2.0) if call <= 21 else 1.5)
    stats = hwprofile.measure_latency(model, dataclasses.replace(config, repeats_if_unstable=2))
    assert stats.attempts == 2 and stats.stable and stats.cv == 0.0 and stats.median_ms == 1.5


def test_a_result_that_stays_unstable_is_flagged(model: Path, scripted: Scripted) -> None:
    config = scripted(lambda call: 1.0 if call % 2 else 2.0)
    stats = hwprofile.measure_latency(model, dataclasses.replace(config, repeats_if_unstable=2))
    assert stats.attempts == 3 and stats.stable is False and stats.cv > 0.05


def test_precision_target_stops_before_min_runs_once_the_median_is_known() -> None:
    config = hwprofile.MeasureConfig(**{**QUICK, "min_runs": 1000, "target_rel_precision": 0.02})
    assert timed_runs(lambda: 1.0, config).size == 10  # identical samples: the median's CI is 0 at the 10th run
    noisy = iter(range(1, 10**6))
    samples = timed_runs(lambda: float(next(noisy) % 7 + 1), config)  # spread 1..7: needs many more runs
    assert 10 < samples.size <= 1000
    assert timed_runs(lambda: 1.0, hwprofile.MeasureConfig(**{**QUICK, "min_runs": 1000})).size == 1000


def test_min_seconds_and_max_seconds_bound_the_timed_runs() -> None:
    def sleepy() -> float:
        time.sleep(0.002)
        return 2.0

    at_least = timed_runs(sleepy, hwprofile.MeasureConfig(**{**QUICK, "min_runs": 1, "min_seconds": 0.05}))
    assert at_least.size >= 15  # 50 ms of 2 ms runs, not 1 run
    capped = timed_runs(sleepy, hwprofile.MeasureConfig(**{**QUICK, "min_runs": 10**6, "max_seconds": 0.05}))
    assert 5 <= capped.size <= 30


def test_warmup_runs_by_count_and_by_time() -> None:
    calls = []
    config = hwprofile.MeasureConfig(**{**QUICK, "warmup_runs": 7, "min_runs": 1})
    timed_runs(lambda: calls.append(1) or 1.0, config)
    assert len(calls) == 7 + 1
    calls.clear()
    timed_runs(lambda: calls.append(time.sleep(0.001)) or 1.0,
               hwprofile.MeasureConfig(**{**QUICK, "warmup_runs": 1, "warmup_seconds": 0.03, "min_runs": 1}))
    assert len(calls) >= 10


def test_measurements_in_threads_never_overlap(model: Path, scripted: Scripted) -> None:
    """The host-wide lock (an flock on a file) serialises measurements, even between threads of one process."""
    spans: list[tuple[float, float]] = []
    config = scripted(log=spans, hold_s=0.02)
    threads = [threading.Thread(target=hwprofile.measure_latency, args=(model, config)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans.sort()
    assert len(spans) == 4
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:]))
