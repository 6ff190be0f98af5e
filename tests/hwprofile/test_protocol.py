"""The measurement protocol on a scripted backend: deterministic stopping, repeating and flagging."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import hwprofile
from hwprofile.backends import Backend, Runner, register_backend
from hwprofile.measure import timed_runs

QUICK = dict(warmup_runs=0, warmup_seconds=0.0, min_seconds=0.0, min_runs=20, target_rel_precision=None)


class _Scripted(Runner):
    def __init__(self, latency: Callable[[int], float], log: list[tuple[float, float]] | None) -> None:
        self.calls, self.latency, self.log = 0, latency, log
        self.opened = time.monotonic()

    def run(self) -> float:
        self.calls += 1
        return self.latency(self.calls)

    def close(self) -> None:
        if self.log is not None:
            self.log.append((self.opened, time.monotonic()))


@register_backend("scripted")
class ScriptedBackend(Backend):
    """``latency(call_number) -> ms``; set by each test through the class attribute."""

    latency: Callable[[int], float] = staticmethod(lambda call: 1.0)
    log: list[tuple[float, float]] | None = None
    hold_s = 0.0

    def version(self) -> str:
        return "1"

    def open(self, path: Path, config: hwprofile.MeasureConfig) -> Runner:
        time.sleep(self.hold_s)
        return _Scripted(type(self).latency, type(self).log)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"scripted backends do not read the file")
    return path


def _set(latency: Callable[[int], float]) -> None:
    ScriptedBackend.latency = staticmethod(latency)  # type: ignore[method-assign]


def test_stops_exactly_at_min_runs_and_reports_known_statistics(model: Path) -> None:
    _set(lambda call: [1.0, 2.0, 3.0, 4.0][call % 4])
    stats = hwprofile.measure_latency(model, hwprofile.MeasureConfig(backend="scripted", cv_threshold=1.0, **QUICK))
    assert stats.runs == 20 and stats.attempts == 1
    assert stats.min_ms == 1.0 and stats.max_ms == 4.0 and stats.median_ms == 2.5 and stats.mean_ms == 2.5
    assert stats.cold_ms >= 0 and stats.session_ms >= 0


def test_an_unstable_attempt_is_repeated_and_the_steady_one_kept(model: Path) -> None:
    # call 1 is the cold run, calls 2..21 the first attempt (noisy), calls from 22 on the second (steady)
    _set(lambda call: (1.0 if call % 2 else 2.0) if call <= 21 else 1.5)
    stats = hwprofile.measure_latency(model, hwprofile.MeasureConfig(backend="scripted", repeats_if_unstable=2,
                                                                     **QUICK))
    assert stats.attempts == 2 and stats.stable and stats.cv == 0.0 and stats.median_ms == 1.5


def test_a_result_that_stays_unstable_is_flagged(model: Path) -> None:
    _set(lambda call: 1.0 if call % 2 else 2.0)
    stats = hwprofile.measure_latency(model, hwprofile.MeasureConfig(backend="scripted", repeats_if_unstable=2,
                                                                     **QUICK))
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


def test_measurements_in_threads_never_overlap(model: Path) -> None:
    """The host-wide lock (an flock on a file) serialises measurements, even between threads of one process."""
    _set(lambda call: 1.0)
    ScriptedBackend.log, ScriptedBackend.hold_s = [], 0.02
    try:
        threads = [threading.Thread(target=hwprofile.measure_latency,
                                    args=(model, hwprofile.MeasureConfig(backend="scripted", **QUICK)))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        spans = sorted(ScriptedBackend.log)
    finally:
        ScriptedBackend.log, ScriptedBackend.hold_s = None, 0.0
    assert len(spans) == 4
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:]))
