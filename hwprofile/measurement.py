"""The records of a measurement: latency statistics, model statistics, and both with where and how they were taken."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from hwprofile.stats import median_rel_ci95

_META = ("device", "model_sha256", "started_at", "finished_at", "target", "cached")


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

    def to_dict(self) -> dict[str, Any]:
        """One flat JSON object: latency fields, ``params``/``macs``/``size_bytes``, setup fields, then the rest."""
        return {**self.latency.to_dict(), **self.model.to_dict(), **self.setup, "device": self.device,
                "model_sha256": self.model_sha256, "started_at": self.started_at, "finished_at": self.finished_at,
                "target": self.target, "cached": self.cached, **self.extra}

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
                   cached=bool(data.get("cached", False)), extra=extra)


__all__ = ["LatencyStats", "Measurement", "ModelStats"]
