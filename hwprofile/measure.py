"""The measurement protocol, the same for every backend (like onnxruntime_perf_test / trtexec)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hwprofile.canary import canary_config, canary_path, canary_sha256
from hwprofile.config import MeasureConfig
from hwprofile.errors import InvalidModelError
from hwprofile.fingerprint import device_fingerprint
from hwprofile.lock import exclusive_measurement
from hwprofile.measurement import CanaryReading, LatencyStats, Measurement
from hwprofile.memory import PeakRSS
from hwprofile.registry import Backend, get_backend
from hwprofile.stats import median_rel_ci95

PRECISION_MIN_RUNS = 10  # the median's confidence interval is not trusted to stop a run before this many


class LocalRun(NamedTuple):
    stats: LatencyStats
    setup: dict[str, Any]  # config.setup() plus what the backend actually used: version, provider, ...
    started_at: float  # time.time() once the host-wide lock was held
    finished_at: float
    canary: CanaryReading | None = None  # the drift canary just before and just after, when asked for


def measure_latency(model_path: str | Path, config: MeasureConfig = MeasureConfig()) -> LatencyStats:
    """Latency statistics of one batch on ``config.backend``, holding the host-wide measurement lock.

    A measurement whose CV exceeds ``config.cv_threshold`` is repeated up to
    ``config.repeats_if_unstable`` times; the steadiest one is returned, flagged if still unstable.
    """
    return measure_with_setup(model_path, config).stats


def measure_with_setup(model_path: str | Path, config: MeasureConfig, *, canary: bool = False) -> LocalRun:
    """:func:`measure_latency`, plus what the backend actually used and when the measurement ran; with ``canary``,
    the drift canary is measured just before and just after the model, in the same hold of the lock."""
    path = Path(model_path)
    backend = get_backend(config.backend)
    version = backend.version()
    if not path.is_file():
        raise InvalidModelError(f"Model {str(path)!r} does not exist.")
    short = canary_config(config) if canary else None  # a backend that cannot run the canary fails before the lock
    canary_ms: list[float] = []
    with exclusive_measurement():
        started_at = time.time()
        if short is not None:
            canary_ms.append(_measure_held(backend, canary_path(), short)[0].median_ms)
        stats, described = _measure_held(backend, path, config)
        if short is not None:
            canary_ms.append(_measure_held(backend, canary_path(), short)[0].median_ms)
        finished_at = time.time()
    reading = CanaryReading(*canary_ms, canary_sha256()) if canary_ms else None
    setup = {**config.setup(), "backend_version": version, **described}
    return LocalRun(stats, setup, started_at, finished_at, reading)


def _measure_held(backend: Backend, path: Path, config: MeasureConfig) -> tuple[LatencyStats, dict[str, Any]]:
    """One model's statistics and what its runner reports, the lock being held by the caller."""
    memory = PeakRSS()
    memory.start()
    start = time.perf_counter()
    runner = backend.open(path, config)
    try:
        session_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        runner.run()
        cold_ms = (time.perf_counter() - start) * 1e3
        attempts = []
        for _ in range(1 + config.repeats_if_unstable):
            samples = timed_runs(runner.run, config)
            attempts.append(LatencyStats.from_samples(samples, cold_ms=cold_ms, session_ms=session_ms,
                                                      cv_threshold=config.cv_threshold))
            if attempts[-1].stable:
                break
        best = min(attempts, key=lambda stats: stats.cv)
        stats = LatencyStats.from_dict({**best.to_dict(), "attempts": len(attempts),
                                        "peak_memory_bytes": memory.peak_bytes(),
                                        "peak_gpu_memory_bytes": runner.peak_gpu_memory_bytes()})
        return stats, runner.describe()
    finally:
        runner.close()


def measure_local(path: str | Path, config: MeasureConfig = MeasureConfig(), digest: str | None = None, *,
                  canary: bool = False) -> Measurement:
    """Check the model (its statistics first: a bad file fails before any long work), then measure it here (with the
    drift canary beside it when ``canary``)."""
    path = Path(path)
    model = get_backend(config.backend).model_stats(path)
    digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
    run = measure_with_setup(path, config, canary=canary)
    return Measurement(latency=run.stats, model=model, setup=run.setup, device=device_fingerprint(),
                       model_sha256=digest, started_at=run.started_at, finished_at=run.finished_at, canary=run.canary)


def timed_runs(run: Callable[[], float], config: MeasureConfig) -> np.ndarray:
    """Warm up (count and time), then time runs until the protocol of :class:`MeasureConfig` says stop."""
    deadline = time.perf_counter() + config.warmup_seconds
    for _ in range(config.warmup_runs):
        run()
    while time.perf_counter() < deadline:
        run()
    samples: list[float] = []
    begin = time.perf_counter()
    next_check = PRECISION_MIN_RUNS
    while True:
        samples.append(run())
        elapsed = time.perf_counter() - begin
        if elapsed >= config.max_seconds:
            break
        if elapsed < config.min_seconds:
            continue
        if len(samples) >= config.min_runs:
            break
        if config.target_rel_precision is not None and len(samples) >= next_check:
            next_check = len(samples) + max(1, len(samples) // 20)  # re-sort every ~5% more samples
            precision = median_rel_ci95(np.asarray(samples))
            if precision is not None and precision <= config.target_rel_precision:
                break
    return np.asarray(samples, dtype=np.float64)


__all__ = ["LocalRun", "measure_latency", "measure_local", "measure_with_setup", "timed_runs"]
