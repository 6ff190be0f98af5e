"""What one request may make the device agent do: each of its threads, shapes, bytes, memory and seconds has a cap.

The defaults are sized to the device: threads up to its usable cores; a measurement's memory up to
half of its RAM (the other half stays with the system and the agent, so no upload can push the
device into swapping or the OOM killer); inputs up to an eighth of that, since a model's weights and
activations need several times its inputs; timed runs never past 10 s.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from hwprofile.config import MeasureConfig
from hwprofile.errors import InvalidOptionError
from hwprofile.inputs import InputSpec, input_bytes

MiB = 1 << 20
MAX_MEASURE_S = 10.0  # the README's promise: timed runs never past 10 s, whatever the client asks
MAX_REPEATS = 2  # measurements of an unstable result beyond the first


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def physical_memory_bytes() -> int:
    """The device's RAM (4 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


@dataclass(frozen=True)
class AgentLimits:
    """The bounds of one request (``nas device serve`` flags in brackets); ``max_input_bytes=None`` means an eighth
    of ``max_memory_bytes``."""

    max_body_bytes: int = 64 * MiB  # [--max-body-mb] the uploaded model
    max_memory_bytes: int = field(default_factory=lambda: physical_memory_bytes() // 2)  # [--max-memory-mb]
    max_input_bytes: int | None = None  # [--max-input-mb] all inputs of one measurement together
    max_batch: int = 4096  # [--max-batch]
    max_dim: int = 1 << 20  # [--max-dim] any one dimension of any input
    max_threads: int = field(default_factory=usable_cores)
    request_timeout_s: float = 60.0  # [--request-timeout] the whole measurement, in its own process
    body_timeout_s: float = 60.0  # [--body-timeout] the upload
    max_measure_s: float = MAX_MEASURE_S  # warm-up and timed runs each, per attempt
    max_pending: int = 16  # [--max-pending] profile requests held at once (uploading, queued or measuring): each
    # holds its body in memory, so at most max_pending x max_body_bytes of bodies wait

    def __post_init__(self) -> None:
        if self.max_input_bytes is None:
            object.__setattr__(self, "max_input_bytes", self.max_memory_bytes // 8)
        counts = {"max_memory_bytes (--max-memory-mb)": self.max_memory_bytes, "max_threads": self.max_threads,
                  "max_batch (--max-batch)": self.max_batch, "max_dim (--max-dim)": self.max_dim,
                  "max_pending (--max-pending)": self.max_pending}
        for name, value in counts.items():
            if not value >= 1:
                raise InvalidOptionError(f"`{name}` must be >= 1, but got {value}.")
        for name, value in {"max_body_bytes (--max-body-mb)": self.max_body_bytes,
                            "max_input_bytes (--max-input-mb)": self.max_input_bytes}.items():
            if not 1 <= value <= self.max_memory_bytes:
                raise InvalidOptionError(f"`{name}` must be in [1, max_memory_bytes={self.max_memory_bytes}] (what a "
                                         f"measurement may use holds it), but got {value}.")
        for name, value in {"request_timeout_s (--request-timeout)": self.request_timeout_s,
                            "body_timeout_s (--body-timeout)": self.body_timeout_s}.items():
            if not (value > 0 and math.isfinite(value)):
                raise InvalidOptionError(f"`{name}` must be a finite number of seconds > 0, but got {value}.")
        if not 0 < self.max_measure_s <= MAX_MEASURE_S:
            raise InvalidOptionError(f"`max_measure_s` must be in (0, {MAX_MEASURE_S:g}], "
                                     f"but got {self.max_measure_s}.")

    @classmethod
    def from_megabytes(cls, *, max_body_mb: float, max_memory_mb: float | None = None,
                       max_input_mb: float | None = None, **others: Any) -> AgentLimits:
        """The limits from ``nas device serve``'s flags: sizes in MiB (None: the default), anything else as is."""
        sizes = {"max_body_bytes": max_body_mb, "max_memory_bytes": max_memory_mb, "max_input_bytes": max_input_mb}
        for name, value in sizes.items():
            if value is not None and not (math.isfinite(value) and 0 < value <= 1 << 40):
                flag = "--" + name.replace("_bytes", "_mb").replace("_", "-")
                raise InvalidOptionError(f"{flag} must be a number of MiB in (0, {1 << 40}], but got {value}.")
        given = {name: int(value * MiB) for name, value in sizes.items() if value is not None}
        return cls(**given, **others)

    def bound(self, config: MeasureConfig) -> tuple[MeasureConfig, dict[str, float]]:
        """``config`` within the limits: threads, batch or dims over a cap raise :class:`InvalidOptionError`; the
        measurement's seconds and repeats are lowered to their caps. Returns it with what was lowered (name: asked)."""
        if config.threads > self.max_threads:
            raise InvalidOptionError(f"threads={config.threads} is more than the {self.max_threads} cores this device "
                                     f"agent offers a measurement.")
        if config.batch > self.max_batch:
            raise InvalidOptionError(f"batch={config.batch} is over this device agent's limit of {self.max_batch} "
                                     f"(nas device serve --max-batch).")
        if large := {name: size for name, size in config.dims if size > self.max_dim}:
            raise InvalidOptionError(f"dims {large} are over this device agent's limit of {self.max_dim} per dimension "
                                     f"(nas device serve --max-dim).")
        caps = {"warmup_seconds": self.max_measure_s, "min_seconds": self.max_measure_s,
                "max_seconds": self.max_measure_s, "repeats_if_unstable": MAX_REPEATS}
        lowered = {name: getattr(config, name) for name, cap in caps.items() if getattr(config, name) > cap}
        return dataclasses.replace(config, **{name: caps[name] for name in lowered}), lowered

    def check_inputs(self, specs: list[InputSpec], shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise :class:`InvalidOptionError` if any input dimension is over ``max_dim`` or all inputs together over
        ``max_input_bytes``: called before any input is allocated."""
        for spec in specs:
            if any(size > self.max_dim for size in shapes[spec.name]):
                raise InvalidOptionError(f"Input {spec.name!r} of the uploaded model would have the shape "
                                         f"{list(shapes[spec.name])}, with a dimension over this device agent's limit "
                                         f"of {self.max_dim} (nas device serve --max-dim).")
        total = input_bytes(specs, shapes)
        if total > self.max_input_bytes:
            described = ", ".join(f"{s.name} {'x'.join(map(str, shapes[s.name]))} {s.dtype}" for s in specs)
            raise InvalidOptionError(f"The uploaded model's inputs ({described}) would take {total / MiB:,.1f} MiB, "
                                     f"over this device agent's limit of {self.max_input_bytes / MiB:,.1f} MiB "
                                     f"(nas device serve --max-input-mb).")

    def describe(self) -> dict[str, Any]:
        """The limits as the agent's ``GET /v1/info`` reports them."""
        return dataclasses.asdict(self)


__all__ = ["AgentLimits", "MAX_MEASURE_S", "physical_memory_bytes", "usable_cores"]
