from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_PATH = Path(os.environ.get("HWPROFILE_LOCK", Path(tempfile.gettempdir()) / "hwprofile-measure.lock"))


@contextmanager
def exclusive_measurement() -> Iterator[None]:
    """Hold a host-wide lock so that no two latency measurements on this machine overlap."""
    with open(LOCK_PATH, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
