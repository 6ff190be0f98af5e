"""What identifies the hardware a latency was measured on (part of the measurement cache key)."""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path
from typing import Any

KEY_FIELDS = ("cpu", "cores", "machine", "system", "board", "gpus")  # what the cache key uses (not the host name)


@functools.lru_cache(maxsize=1)
def device_fingerprint() -> dict[str, Any]:
    """CPU model, core counts, board (Jetson, Raspberry Pi, ...), NVIDIA GPU names and the host name.

    Read from /proc and the device tree: no GPU library is loaded to find it.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "machine": platform.machine(),
            "system": platform.system(), "board": _board(), "gpus": _nvidia_gpus(), "hostname": platform.node()}


def fingerprint_key(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fields of a fingerprint that decide whether two measurements are comparable."""
    return {k: fingerprint.get(k) for k in KEY_FIELDS}


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Hardware", "Processor", "cpu model"):  # x86, then ARM/MIPS spellings
        if match := re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE):
            return match[1].strip()
    return platform.processor() or platform.machine()


def _board() -> str | None:
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None
    except OSError:
        return None


def _nvidia_gpus() -> list[str]:
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            if match := re.search(r"^Model:\s*(.+)$", info.read_text(), re.MULTILINE):
                names.append(match[1].strip())
        except OSError:
            continue
    return names
