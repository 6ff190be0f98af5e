"""The budgets a student must meet: latency, ONNX file size and peak memory.

Each budget is an Optuna constraint (``trial.set_constraint(name, measured - budget)``: over budget when positive),
which every sampler reads; a student over any budget is recorded infeasible and never trained.
"""

from __future__ import annotations

import re
import optuna

import hwprofile
from nas.config import SearchConfig

# --size-budget / --memory-budget units: decimal (kB = 1000 B) and binary (KiB = 1024 B), case-insensitive.
SIZE_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_UNITS = {unit.lower(): factor for unit, factor in SIZE_UNITS.items()}
LATENCY_CONSTRAINT = "latency_over_budget_ms"
SIZE_CONSTRAINT = "size_over_budget_bytes"
MEMORY_CONSTRAINT = "memory_over_budget_bytes"


def parse_size(text: str) -> int:
    """Bytes of a size such as ``200KB``, ``2MB``, ``1.5MiB`` or ``4096B``; a ValueError names the accepted units."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([A-Za-z]+)\s*", text)
    if not match or match[2].lower() not in _UNITS:
        raise ValueError(f"expected a size with a unit, one of {', '.join(SIZE_UNITS)} (e.g. 200KB or 2MB), "
                         f"but got {text!r}")
    value = float(match[1]) * _UNITS[match[2].lower()]
    if not value < 2**63:
        raise ValueError(f"expected a size below 2**63 bytes, but got {text!r}")
    return round(value)


def overruns(config: SearchConfig, latency_ms: float, measurement: hwprofile.Measurement) -> dict[str, float]:
    """How far the student of ``measurement`` (its latency objective ``latency_ms``) is over each budget of
    ``config``, by constraint name (negative: within it). A memory budget needs a measurement with peak memory."""
    over: dict[str, float] = {}
    if config.latency_budget_ms is not None:
        over[LATENCY_CONSTRAINT] = latency_ms - config.latency_budget_ms
    if config.size_budget_bytes is not None:
        over[SIZE_CONSTRAINT] = float(measurement.model.size_bytes - config.size_budget_bytes)
    if config.memory_budget_bytes is not None:
        memory = measurement.latency.peak_memory_bytes
        if memory is None:
            raise ValueError("--memory-budget needs the peak memory of each measurement, which this device does not "
                             "report (it is read from /proc on Linux).")
        over[MEMORY_CONSTRAINT] = float(memory - config.memory_budget_bytes)
    return over


def footprint_value(name: str, measurement: hwprofile.Measurement) -> float:
    """The third objective ``name`` (``size`` or ``memory``, in bytes) of the student of ``measurement``."""
    if name == "size":
        return float(measurement.model.size_bytes)
    if (memory := measurement.latency.peak_memory_bytes) is None:
        raise ValueError("--objectives ...,memory needs the peak memory of each measurement, which this device does "
                         "not report (it is read from /proc on Linux).")
    return float(memory)


def set_constraints(trial: optuna.Trial, over: dict[str, float]) -> None:
    """Record every budget's overrun as the trial's constraints (over a budget when positive)."""
    for name, value in over.items():
        trial.set_constraint(name, value)


def misses(config: SearchConfig, latency_ms: float, measurement: hwprofile.Measurement, subject: str) -> list[str]:
    """The budgets that ``subject`` (the student of ``measurement``) misses, as phrases naming the flag, the budget
    and the value."""
    over = overruns(config, latency_ms, measurement)
    phrases = {LATENCY_CONSTRAINT: lambda: f"--latency-budget {config.latency_budget_ms} ms is below the latency of "
                                           f"{subject}: {latency_ms:.4f} ms median",
               SIZE_CONSTRAINT: lambda: f"--size-budget {config.size_budget_bytes} bytes is below the ONNX file size "
                                        f"of {subject}: {measurement.model.size_bytes} bytes",
               MEMORY_CONSTRAINT: lambda: f"--memory-budget {config.memory_budget_bytes} bytes is below the peak "
                                          f"memory of {subject}: {measurement.latency.peak_memory_bytes} bytes"}
    return [phrases[name]() for name, value in over.items() if value > 0]


__all__ = ["LATENCY_CONSTRAINT", "MEMORY_CONSTRAINT", "SIZE_CONSTRAINT", "SIZE_UNITS", "footprint_value", "misses",
           "overruns", "parse_size", "set_constraints"]
