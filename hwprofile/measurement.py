"""The records of a measurement: latency statistics, model statistics, and both with where and how they were taken."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from hwprofile.stats import median_rel_ci95

QUIET_TOLERANCE = 0.05  # a block pair is quiet when both its blocks are this close to the fastest tenth of their own
QUIET_MIN_PAIRS = 3

_META = ("device", "model_sha256", "started_at", "finished_at", "target", "cached", "canary", "drift")


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
    def from_samples(cls, samples_ms: np.ndarray, *, cold_ms: float, session_ms: float,
                     cv_threshold: float) -> LatencyStats:
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


@dataclass(frozen=True)
class ModelStats:
    """Static facts about a model file (see :func:`hwprofile.model_stats`)."""

    params: int
    macs: int  # per sample (batch 1)
    size_bytes: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class CanaryReading:
    """The drift canary (:mod:`hwprofile.canary`) measured interleaved with one model, block by block, in the same hold
    of the measurement lock (or the same device-agent request): a block of the model's runs, then a block of the
    canary's, each about :data:`~hwprofile.measure.BLOCK_MS` long, so that both see the device in the same state."""

    canary_ms: float  # the canary's median over its quiet blocks (see from_blocks)
    ratio: float  # the median over quiet block pairs of (model's block median / canary's block median)
    spread: float  # robust CV of the canary's block medians: how much the device moved during the measurement
    model_sha256: str  # which canary: readings of different canaries are never compared

    def __post_init__(self) -> None:
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (self.canary_ms, self.ratio)) \
                or not (isinstance(self.spread, (int, float)) and self.spread >= 0) \
                or not isinstance(self.model_sha256, str):
            raise ValueError(f"A canary reading needs finite latencies and ratio > 0, a spread >= 0 and the canary's "
                             f"sha256, but got ({self.canary_ms=}, {self.ratio=}, {self.spread=}, {self.model_sha256=}).")

    @classmethod
    def from_blocks(cls, model_ms: np.ndarray, canary_ms: np.ndarray, model_sha256: str) -> CanaryReading:
        """The reading of paired block medians (``model_ms[i]`` measured just before ``canary_ms[i]``), taken over
        the quiet pairs: those whose blocks are both within :data:`QUIET_TOLERANCE` of the fastest tenth of their
        own model's blocks (at least :data:`QUIET_MIN_PAIRS`, the least disturbed: a pair is as disturbed as its
        more disturbed block). A load that comes and goes slows two models unequally (one may fit the caches it
        shares, the other not), so the ratio is read where the device was least disturbed; and a load that hit one
        block of a pair but not the other says nothing of the device's speed, so such a pair never counts (judging
        the canary's block alone kept them and biased the ratio up to 25%)."""
        median = float(np.median(canary_ms))
        spread = 1.4826 * float(np.median(np.abs(canary_ms - median))) / median
        disturbed = np.maximum(model_ms / np.quantile(model_ms, 0.1), canary_ms / np.quantile(canary_ms, 0.1))
        order = np.argsort(disturbed, kind="stable")
        quiet = order[:max(int(np.sum(disturbed <= 1 + QUIET_TOLERANCE)), min(QUIET_MIN_PAIRS, len(order)))]
        return cls(float(np.median(canary_ms[quiet])), float(np.median(model_ms[quiet] / canary_ms[quiet])), spread,
                   model_sha256)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Drift:
    """A measurement held against a canary baseline: its median normalised to the baseline's moment, and whether the
    device had drifted."""

    canary_baseline_ms: float  # the canary when the baseline was taken
    canary_ms: float  # the canary during this measurement
    normalised_ms: float  # the model's latency at the baseline's moment: ratio to the canary x canary_baseline_ms
    drift: float  # canary_ms / canary_baseline_ms - 1
    latency_drift: bool  # the canary moved more than the threshold, and still did after the re-measurements
    remeasured: int = 0  # measurements taken again because the canary had moved

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CanaryBaseline:
    """The canary's latency that measurements are normalised to (a search's, taken at its start), and how far a
    reading may move from it, or during one measurement, before the model is measured again."""

    canary_ms: float
    model_sha256: str
    # relative move that calls for a re-measurement: a load that slows the canary 8% may slow a student 25%
    # (bench/latency_drift.py), and a quiet canary reads within 1-2% of its baseline
    threshold: float = 0.05
    # measurements of each model, each in fresh sessions, the fastest normalised one kept: a load the canary did not
    # see, or a slow session (ONNX Runtime sessions of one model differ by up to 40% on a quiet 2-core VM), slows
    # one of them, rarely both (bench/latency_drift.py: one measurement in 60 read 28% slow with one attempt)
    attempts: int = 2
    remeasures: int = 3  # at most this many more while the canary stays slower than the baseline allows
    # seconds to wait before the first re-measurement, doubled before each next one (0.5, 1, 2 s): a load that comes
    # and goes lasts seconds, and a re-measurement taken at once mostly meets the same load again
    backoff_s: float = 0.5
    measured_at: float = 0.0  # wall-clock seconds (time.time())
    # the fastest canary met since the baseline, when faster than it (:meth:`after`): a slowdown is judged against
    # it too, so that a baseline taken in a slow stretch (once 14% slow) does not hide a later slowdown
    fastest_seen_ms: float | None = None

    def __post_init__(self) -> None:
        if not (self.canary_ms > 0 and self.threshold > 0 and self.attempts >= 1 and self.remeasures >= 0
                and self.backoff_s >= 0):
            raise ValueError(f"`canary_ms > 0`, `threshold > 0`, `attempts >= 1`, `remeasures >= 0` and `backoff_s >= 0` "
                             f"must hold, but got ({self.canary_ms=}, {self.threshold=}, {self.attempts=}, "
                             f"{self.remeasures=}, {self.backoff_s=}).")

    def wait_before(self, remeasure: int) -> float:
        """Seconds to wait before re-measurement number ``remeasure`` (1, 2, ...)."""
        return self.backoff_s * 2 ** (remeasure - 1)

    def distance(self, reading: CanaryReading) -> float:
        """How far the canary of ``reading`` is from the baseline (relative)."""
        self._require_same_canary(reading)
        return abs(reading.canary_ms / self.canary_ms - 1)

    def drifted(self, reading: CanaryReading) -> bool:
        return self.distance(reading) > self.threshold

    def slowed(self, reading: CanaryReading) -> bool:
        """The canary is slower than the fastest it has read (the baseline, or faster since) by more than the
        threshold: a load a re-measurement may wait out (a canary that reads faster says the device, or the
        baseline's moment, changed: waiting changes nothing)."""
        self._require_same_canary(reading)
        return reading.canary_ms > self._fastest_ms() * (1 + self.threshold)

    def after(self, measurement: Measurement) -> CanaryBaseline:
        """This baseline having met ``measurement``'s canary: its fastest canary lowered to that reading when it was
        faster. A cached measurement was taken at another moment and does not count."""
        reading = measurement.canary
        if measurement.cached or reading is None or reading.canary_ms >= self._fastest_ms():
            return self
        self._require_same_canary(reading)
        return replace(self, fastest_seen_ms=reading.canary_ms)

    def _fastest_ms(self) -> float:
        return self.canary_ms if self.fastest_seen_ms is None else min(self.canary_ms, self.fastest_seen_ms)

    def _require_same_canary(self, reading: CanaryReading) -> None:
        if reading.model_sha256 != self.model_sha256:
            raise ValueError(f"A reading of canary {reading.model_sha256[:12]} cannot be held against a baseline of "
                             f"canary {self.model_sha256[:12]}.")

    def check(self, reading: CanaryReading, remeasured: int = 0) -> Drift:
        """The model measured beside ``reading`` normalised to this baseline (its ratio to the canary times the
        baseline), with the drift flag."""
        return Drift(canary_baseline_ms=self.canary_ms, canary_ms=reading.canary_ms,
                     normalised_ms=reading.ratio * self.canary_ms,
                     drift=reading.canary_ms / self.canary_ms - 1, latency_drift=self.drifted(reading),
                     remeasured=remeasured)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanaryBaseline:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class Measurement:
    """Latency statistics and model statistics of one model file, with where and how they were taken."""

    latency: LatencyStats
    model: ModelStats
    setup: dict[str, Any]  # backend, backend_version, provider, threads, spinning, batch, dims, precision, ...
    device: dict[str, Any]  # fingerprint of the machine that measured (see hwprofile.fingerprint)
    model_sha256: str
    started_at: float  # wall-clock seconds (time.time()) around the measurement, on the measuring machine
    finished_at: float
    target: str | None = None  # the device agent's URL; None when measured on this machine
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # anything else an agent reported
    canary: CanaryReading | None = None  # the drift canary beside it, when asked for (kept in the cache)
    drift: Drift | None = None  # against the caller's canary baseline (never cached: it depends on the baseline)

    @property
    def normalised_ms(self) -> float | None:
        """The median normalised to the canary baseline (None without one)."""
        return self.drift.normalised_ms if self.drift is not None else None

    def to_dict(self) -> dict[str, Any]:
        """One flat JSON object: latency fields, ``params``/``macs``/``size_bytes``, setup fields, then the rest
        (``canary`` and ``drift`` only when there are)."""
        records = {name: record.to_dict() for name, record in (("canary", self.canary), ("drift", self.drift))
                   if record is not None}
        return {**self.latency.to_dict(), **self.model.to_dict(), **self.setup, "device": self.device,
                "model_sha256": self.model_sha256, "started_at": self.started_at, "finished_at": self.finished_at,
                "target": self.target, "cached": self.cached, **records, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> Measurement:
        """The inverse of :meth:`to_dict` (``overrides`` replace top-level fields, e.g. ``cached=True``)."""
        data = {**data, **overrides}
        latency_keys = {f.name for f in fields(LatencyStats)}
        model_keys = {f.name for f in fields(ModelStats)}
        rest = {k: v for k, v in data.items() if k not in latency_keys | model_keys | set(_META)}
        extra = {"agent": rest.pop("agent")} if "agent" in rest else {}
        return cls(latency=LatencyStats.from_dict(data), model=ModelStats(**{k: data[k] for k in model_keys}),
                   setup=rest, device=data.get("device", {}), model_sha256=data["model_sha256"],
                   started_at=data["started_at"], finished_at=data["finished_at"], target=data.get("target"),
                   cached=bool(data.get("cached", False)), extra=extra,
                   canary=_canary_reading(data.get("canary")),
                   drift=Drift(**data["drift"]) if data.get("drift") is not None else None)


def _canary_reading(data: dict[str, Any] | None) -> CanaryReading | None:
    """The reading stored in ``data``; None for none, or for one of an older layout (measured just before and after
    the model), which a baseline then treats as missing: the model is measured again."""
    names = {f.name for f in fields(CanaryReading)}
    return CanaryReading(**data) if data is not None and set(data) == names else None


__all__ = ["CanaryBaseline", "CanaryReading", "Drift", "LatencyStats", "Measurement", "ModelStats"]
