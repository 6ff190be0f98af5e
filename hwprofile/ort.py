"""Latency of an ONNX model under ONNX Runtime, measured like onnxruntime_perf_test."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hwprofile.errors import InvalidModelError
from hwprofile.lock import exclusive_measurement
from hwprofile.stats import LatencyStats

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32}


@dataclass(frozen=True)
class MeasureConfig:
    threads: int = 1
    batch: int = 1
    warmup_runs: int = 10
    warmup_seconds: float = 0.05
    min_runs: int = 50  # timed runs continue until both minimums are met ...
    min_seconds: float = 0.3
    max_seconds: float = 10.0  # ... or this much time has passed
    cv_threshold: float = 0.05
    repeats_if_unstable: int = 1

    def __post_init__(self) -> None:
        if self.threads < 1 or self.batch < 1:
            raise ValueError(f"`threads` and `batch` must be >= 1, but got ({self.threads=}, {self.batch=}).")


def measure_latency(model_path: str | Path, config: MeasureConfig = MeasureConfig()) -> LatencyStats:
    """Median/p90/CV latency of one batch on the CPU, holding the host-wide measurement lock.

    A measurement whose CV exceeds ``config.cv_threshold`` is repeated up to
    ``config.repeats_if_unstable`` times; the steadiest one is returned, flagged if still unstable.
    """
    with exclusive_measurement():
        start = time.perf_counter()
        session = _create_session(Path(model_path), config.threads)
        session_ms = (time.perf_counter() - start) * 1e3
        feed = _random_feed(session, config.batch)
        start = time.perf_counter()
        session.run(None, feed)
        cold_ms = (time.perf_counter() - start) * 1e3
        attempts = []
        for _ in range(1 + config.repeats_if_unstable):
            samples = _timed_runs(session, feed, config)
            attempts.append(LatencyStats.from_samples(samples, cold_ms=cold_ms, session_ms=session_ms,
                                                      cv_threshold=config.cv_threshold))
            if attempts[-1].stable:
                break
        return min(attempts, key=lambda stats: stats.cv)


def _create_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not path.is_file():
        raise InvalidModelError(f"ONNX model {str(path)!r} does not exist.")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise InvalidModelError(f"ONNX Runtime cannot load {str(path)!r}: {error}".splitlines()[0]) from error


def _random_feed(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for value in session.get_inputs():
        if value.type not in _NUMPY_TYPES:
            raise InvalidModelError(f"Input {value.name!r} has unsupported type {value.type}.")
        dims = [batch if i == 0 and not isinstance(d, int) else d for i, d in enumerate(value.shape)]
        if not all(isinstance(d, int) for d in dims):
            raise InvalidModelError(f"Input {value.name!r} has symbolic dimensions {value.shape} besides the batch.")
        feed[value.name] = rng.standard_normal(dims).astype(_NUMPY_TYPES[value.type])
    return feed


def _timed_runs(session: ort.InferenceSession, feed: dict[str, np.ndarray], config: MeasureConfig) -> np.ndarray:
    run = session.run
    deadline = time.perf_counter() + config.warmup_seconds
    for i in range(config.warmup_runs):
        run(None, feed)
    while time.perf_counter() < deadline:
        run(None, feed)
    samples = []
    begin = time.perf_counter()
    elapsed = 0.0
    while (len(samples) < config.min_runs or elapsed < config.min_seconds) and elapsed < config.max_seconds:
        start = time.perf_counter_ns()
        run(None, feed)
        samples.append(time.perf_counter_ns() - start)
        elapsed = time.perf_counter() - begin
    return np.asarray(samples, dtype=np.float64) / 1e6
