"""What every benchmark script shares: the machine and load it ran under, and writing its results file."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import onnxruntime
import optuna
import torch

import hwprofile

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BUSY_LOAD = 0.5  # a 1-minute load average above this means other work will skew the timings


Item = TypeVar("Item")


def evenly_spaced(items: Sequence[Item], count: int) -> list[Item]:
    """At most ``count`` of ``items`` (ordered by the caller) at evenly spaced positions, the first and last included."""
    if not items:
        return []
    picks = sorted({round(i * (len(items) - 1) / max(1, count - 1)) for i in range(count)})
    return [items[i] for i in picks]


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages: other work on the machine skews every timing here."""
    return [round(value, 2) for value in os.getloadavg()]


def load_before() -> list[float]:
    """The load averages as a run starts, with a warning when the machine is already busy."""
    load = load_average()
    if load[0] > BUSY_LOAD:
        print(f"warning: load average {load[0]} before starting; other processes will skew the timings", flush=True)
    return load


def machine() -> dict[str, Any]:
    """The hardware (``hwprofile.device_fingerprint()`` without the host name) and the software that ran."""
    device = {key: value for key, value in hwprofile.device_fingerprint().items() if key != "hostname"}
    return {**device, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "onnxruntime": onnxruntime.__version__, "optuna": optuna.__version__}


def header(load_at_start: list[float]) -> dict[str, Any]:
    """The first keys of every results file: the date, the machine, and the load averages at start and now."""
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
            "load_average": {"before": load_at_start, "after": load_average()}}


def checks_line(checks: dict[str, bool]) -> str:
    """One line naming each target check and whether it held."""
    return "checks: " + ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in checks.items())


def publish(results: dict[str, Any], report: str, path: Path) -> None:
    """Print the human-readable ``report``, then write ``results`` as :func:`write_json` does."""
    print()
    print(report)
    write_json(results, path)


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` atomically (a killed run leaves the previous file whole) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)
    print(f"Wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
