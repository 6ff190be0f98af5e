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
BLOCK_MS = 10.0  # a block of one model's runs beside the drift canary lasts about this long (their latencies' sum)
BLOCK_MIN_RUNS = 3


class LocalRun(NamedTuple):
    stats: LatencyStats
    setup: dict[str, Any]  # config.setup() plus what the backend actually used: version, provider, ...
    started_at: float  # time.time() once the host-wide lock was held
    finished_at: float
    canary: CanaryReading | None = None  # the drift canary interleaved with the model, when asked for


def measure_latency(model_path: str | Path, config: MeasureConfig = MeasureConfig()) -> LatencyStats:
    """Latency statistics of one batch on ``config.backend``, holding the host-wide measurement lock.

    A measurement whose CV exceeds ``config.cv_threshold`` is repeated up to
    ``config.repeats_if_unstable`` times; the steadiest one is returned, flagged if still unstable.
    """
    return measure_with_setup(model_path, config).stats


def measure_with_setup(model_path: str | Path, config: MeasureConfig, *, canary: bool = False) -> LocalRun:
    """:func:`measure_latency`, plus what the backend actually used and when the measurement ran; with ``canary``,
    the drift canary is measured interleaved with the model (:func:`paired_runs`), in the same hold of the lock."""
    path = Path(model_path)
    backend = get_backend(config.backend)
    version = backend.version()
    if not path.is_file():
        raise InvalidModelError(f"Model {str(path)!r} does not exist.")
    canary_setup = canary_config(config) if canary else None  # a backend that cannot run it fails before the lock
    with exclusive_measurement():
        started_at = time.time()
        stats, described, reading = _measure_held(backend, path, config, canary_setup)
        finished_at = time.time()
    setup = {**config.setup(), "backend_version": version, **described}
    return LocalRun(stats, setup, started_at, finished_at, reading)


def _measure_held(backend: Backend, path: Path, config: MeasureConfig, canary_setup: MeasureConfig | None
                  ) -> tuple[LatencyStats, dict[str, Any], CanaryReading | None]:
    """One model's statistics, what its runner reports and (with ``canary_setup``) the canary's reading beside it;
    the lock being held by the caller. The canary's session opens first, outside the model's memory window (it also
    takes the cost of a process's first session, which would otherwise count in the model's peak memory)."""
    canary_runner = None if canary_setup is None else backend.open(canary_path(), canary_setup)
    runner = None
    try:
        if canary_runner is not None:
            canary_runner.run()
        memory = PeakRSS()
        memory.start()
        start = time.perf_counter()
        runner = backend.open(path, config)
        session_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        runner.run()
        cold_ms = (time.perf_counter() - start) * 1e3
        attempts: list[tuple[LatencyStats, CanaryReading | None]] = []
        for _ in range(1 + config.repeats_if_unstable):
            if canary_runner is None:
                samples, reading = timed_runs(runner.run, config), None
            else:
                samples, model_blocks, canary_blocks = paired_runs(runner.run, canary_runner.run, config)
                reading = CanaryReading.from_blocks(model_blocks, canary_blocks, canary_sha256())
            attempts.append((LatencyStats.from_samples(samples, cold_ms=cold_ms, session_ms=session_ms,
                                                       cv_threshold=config.cv_threshold), reading))
            if attempts[-1][0].stable:
                break
        best, reading = min(attempts, key=lambda attempt: attempt[0].cv)
        stats = LatencyStats.from_dict({**best.to_dict(), "attempts": len(attempts),
                                        "peak_memory_bytes": memory.peak_bytes(),
                                        "peak_gpu_memory_bytes": runner.peak_gpu_memory_bytes()})
        return stats, runner.describe(), reading
    finally:
        for opened in (runner, canary_runner):
            if opened is not None:
                opened.close()


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
    _warm_up(run, config)
    return _until_done(lambda: [run()], config)


def paired_runs(run: Callable[[], float], canary_run: Callable[[], float],
                config: MeasureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`timed_runs` of ``run`` in blocks of about :data:`BLOCK_MS`, each followed by a block of ``canary_run``:
    the model's samples, and the model's and the canary's median of each block pair.

    A block is short next to the way a device changes speed (a load coming and going, a clock stepping), so both
    blocks of a pair see the device in one state, and long enough that each model runs with its own data in the caches.
    """
    _warm_up(run, config)
    _warm_up(canary_run, config)
    model_blocks: list[float] = []
    canary_blocks: list[float] = []

    def block_pair() -> list[float]:
        samples = _block(run)
        model_blocks.append(float(np.median(samples)))
        canary_blocks.append(float(np.median(_block(canary_run))))
        return samples

    samples = _until_done(block_pair, config)
    return samples, np.asarray(model_blocks), np.asarray(canary_blocks)


def _block(run: Callable[[], float]) -> list[float]:
    """Runs until they add up to :data:`BLOCK_MS` (at least :data:`BLOCK_MIN_RUNS`)."""
    samples = [run() for _ in range(BLOCK_MIN_RUNS)]
    while sum(samples) < BLOCK_MS:
        samples.append(run())
    return samples


def _warm_up(run: Callable[[], float], config: MeasureConfig) -> None:
    deadline = time.perf_counter() + config.warmup_seconds
    for _ in range(config.warmup_runs):
        run()
    while time.perf_counter() < deadline:
        run()


def _until_done(take: Callable[[], list[float]], config: MeasureConfig) -> np.ndarray:
    """Samples from ``take()`` until the protocol of :class:`MeasureConfig` says stop (its seconds count every run
    ``take`` makes, the canary's included)."""
    samples: list[float] = []
    begin = time.perf_counter()
    next_check = PRECISION_MIN_RUNS
    while True:
        samples += take()
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


__all__ = ["LocalRun", "measure_latency", "measure_local", "measure_with_setup", "paired_runs", "timed_runs"]
