"""Peak host memory of a stretch of work in this process (Linux: VmHWM after a reset)."""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakRSS:
    """How far resident memory rose above its level at :meth:`start`, at its highest point.

    ``start`` returns freed heap pages to the OS (``malloc_trim``) so that memory reused from earlier
    work still counts, then resets the kernel's high-water mark (``/proc/self/clear_refs``).
    :meth:`peak_bytes` is None where the platform offers neither (not Linux, or a locked-down /proc).
    """

    def __init__(self) -> None:
        self._baseline: int | None = None

    def start(self) -> None:
        _malloc_trim()
        try:
            _CLEAR_REFS.write_text("5")
            self._baseline = _status_bytes("VmRSS")
        except OSError:
            self._baseline = None

    def peak_bytes(self) -> int | None:
        if self._baseline is None:
            return None
        try:
            return max(0, _status_bytes("VmHWM") - self._baseline)
        except OSError:
            return None


def _status_bytes(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if not match:
        raise OSError(f"no {key} in {_STATUS}")
    return int(match[1]) * 1024


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc
        pass
