"""What one latency measurement is asked to do: backend, setup, and the measurement protocol."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hwprofile.errors import InvalidOptionError
from hwprofile.registry import backend_names

PRECISIONS = ("fp32", "fp16")
GRAPH_OPTIMIZATIONS = ("disabled", "basic", "extended", "all")


@dataclass(frozen=True)
class MeasureConfig:
    """Setup and protocol of a measurement.

    Setup (changes what the number means, so it is part of the cache key): ``backend``, ``provider``
    (ONNX Runtime execution provider, ``ort`` only), ``threads``, ``spinning`` (ORT thread-pool
    spin-waiting), ``batch``, ``dims`` (values of named dynamic dimensions besides the batch),
    ``precision`` (``fp16`` converts the model's float tensors before loading) and
    ``graph_optimization`` (ORT level).

    Protocol: warm-up until both ``warmup_runs`` and ``warmup_seconds`` are reached; then timed runs
    until both ``min_runs`` and ``min_seconds`` are met, or — once ``min_seconds`` has passed and at
    least 10 runs were taken — until the 95% confidence interval of the median is within
    ``±target_rel_precision`` of it (so slow models need not reach ``min_runs``), never past
    ``max_seconds``. A result whose robust CV exceeds ``cv_threshold`` is measured again up to
    ``repeats_if_unstable`` times; the steadiest attempt is kept and flagged ``stable=False`` if
    still unstable.
    """

    threads: int = 1
    batch: int = 1
    warmup_runs: int = 10
    warmup_seconds: float = 0.05
    min_runs: int = 50  # timed runs continue until both minimums are met ...
    min_seconds: float = 0.3
    max_seconds: float = 10.0  # ... or this much time has passed
    cv_threshold: float = 0.05
    repeats_if_unstable: int = 1
    backend: str = "ort"
    provider: str | None = None  # ort only; None means "cpu"
    dims: Mapping[str, int] | tuple[tuple[str, int], ...] = field(default=())
    precision: str = "fp32"
    graph_optimization: str = "all"
    spinning: bool = True
    target_rel_precision: float | None = 0.02

    def __post_init__(self) -> None:
        if self.threads < 1 or self.batch < 1:
            raise InvalidOptionError(f"`threads` and `batch` must be >= 1, but got ({self.threads=}, {self.batch=}).")
        items = self.dims.items() if isinstance(self.dims, Mapping) else self.dims
        dims = tuple(sorted((str(name), int(value)) for name, value in items))
        if any(value < 1 for _, value in dims):
            raise InvalidOptionError(f"Every dynamic dimension must be >= 1, but got dims={dict(dims)}.")
        object.__setattr__(self, "dims", dims)
        if self.min_runs < 1 or self.warmup_runs < 0 or self.repeats_if_unstable < 0:
            raise InvalidOptionError(f"`min_runs` must be >= 1 and `warmup_runs`, `repeats_if_unstable` >= 0, but got "
                                     f"({self.min_runs=}, {self.warmup_runs=}, {self.repeats_if_unstable=}).")
        if not (0 <= self.min_seconds <= self.max_seconds and self.max_seconds > 0 and self.warmup_seconds >= 0):
            raise InvalidOptionError(f"`0 <= min_seconds <= max_seconds`, `max_seconds > 0` and `warmup_seconds >= 0` "
                                     f"must hold, but got ({self.min_seconds=}, {self.max_seconds=}, "
                                     f"{self.warmup_seconds=}).")
        if not self.cv_threshold > 0:
            raise InvalidOptionError(f"`cv_threshold` must be > 0, but got {self.cv_threshold=}.")
        if self.target_rel_precision is not None and not 0 < self.target_rel_precision < 1:
            raise InvalidOptionError(f"`target_rel_precision` must be in (0, 1) or None, but got "
                                     f"{self.target_rel_precision=}.")
        if self.backend not in backend_names():
            raise InvalidOptionError(f"Unknown backend {self.backend!r}; known backends: {', '.join(backend_names())}.")
        if self.provider is not None and self.backend != "ort":
            raise InvalidOptionError(f"`provider` selects an ONNX Runtime execution provider (backend 'ort'), but got "
                                     f"provider={self.provider!r} with backend={self.backend!r}.")
        if self.precision not in PRECISIONS:
            raise InvalidOptionError(f"`precision` must be one of {PRECISIONS}, but got {self.precision!r}.")
        if self.graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise InvalidOptionError(f"`graph_optimization` must be one of {GRAPH_OPTIMIZATIONS}, "
                                     f"but got {self.graph_optimization!r}.")

    @property
    def dims_dict(self) -> dict[str, int]:
        return dict(self.dims)  # type: ignore[arg-type]

    def setup(self) -> dict[str, Any]:
        """The settings that change what a measured latency means (the cache key's part)."""
        return {"backend": self.backend, "provider": self.provider or ("cpu" if self.backend == "ort" else None),
                "threads": self.threads, "spinning": self.spinning, "batch": self.batch, "dims": self.dims_dict,
                "precision": self.precision, "graph_optimization": self.graph_optimization}

    def to_query(self) -> dict[str, str]:
        """Every field as a string, for the device agent's query parameters (inverse of :meth:`from_query`)."""
        query = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "dims":
                value = ",".join(f"{name}={size}" for name, size in value)
            elif value is None:
                value = "none"
            query[f.name] = str(value).lower() if isinstance(value, bool) else str(value)
        return query

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> MeasureConfig:
        """Parse string options (query parameters); unknown names and bad values raise :class:`InvalidOptionError`."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(query) - set(fields))
        if unknown:
            raise InvalidOptionError(f"Unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(fields)}.")
        values: dict[str, Any] = {}
        for name, text in query.items():
            default = fields[name].default
            try:
                if name == "dims":
                    values[name] = parse_dims(text.split(",") if text else [])
                elif text.lower() == "none" and name in ("provider", "target_rel_precision"):
                    values[name] = None
                elif isinstance(default, bool):
                    if text.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    values[name] = text.lower() in ("true", "1")
                elif isinstance(default, int):
                    values[name] = int(text)
                elif isinstance(default, float):
                    values[name] = float(text)
                    if not math.isfinite(values[name]):
                        raise ValueError
                else:
                    values[name] = text
            except ValueError:
                kind = "dims like 'seq=128,height=224'" if name == "dims" else type(default).__name__
                raise InvalidOptionError(f"Option {name!r} must be {kind}, but got {text!r}.") from None
        return cls(**values)


def parse_dims(items: list[str]) -> dict[str, int]:
    """``["seq=128", "h=224"]`` -> ``{"seq": 128, "h": 224}``; raises ValueError on a malformed item."""
    dims = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=VALUE, but got {item!r}")
        dims[name.strip()] = int(value)
    return dims
