"""The host's CPU cores, shared by its `nas` processes that train, and training paused while latency is measured.

Every process that trains joins a registry (:class:`Registry`): a member file under :data:`REGISTRY_DIR` on which
it holds an flock for as long as it lives. The lock dies with the process, so a file left by a dead process is
stale: it is not counted (and is removed by the next process that counts). At every trial a process sets torch's
intra-op threads to its share, ``max(1, cores // live members)`` (:func:`training_threads`), the way
``--workers K`` gives each worker ``cores // K``; two searches on one host then no longer oversubscribe the cores.

A latency measurement holds the host's measurement lock (``hwprofile.exclusive_measurement``); every training step
first passes :class:`MeasurementPause`, which waits while any process holds it, so that training in one process
never disturbs a measurement in another.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

import hwprofile.lock

REGISTRY_DIR = Path(os.environ.get("NAS_CORES_DIR", Path(tempfile.gettempdir()) / "nas-training"))
_SUFFIX = ".member"


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def _alive(path: Path) -> bool:
    """Whether the process that wrote member file ``path`` still holds its lock; a stale file is removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # gone, or not ours to read
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the shared lock taken on a stale file
    try:
        path.unlink()
    except OSError:  # removed by another process already, or not ours to remove
        pass
    return False


class Registry:
    """This process's membership of the host's training processes, in ``directory``."""

    def __init__(self, directory: Path = REGISTRY_DIR) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None
        self._path: Path | None = None

    @property
    def joined(self) -> bool:
        return self._fd is not None

    def join(self) -> None:
        """Add this process (a no-op when it is a member already). The file is locked before it takes its member
        name, so a member file is never seen unlocked while its process lives."""
        if self.joined:
            return
        try:  # every user's processes share the cores: a folder anyone may add to (sticky, as /tmp is)
            self.directory.mkdir(parents=True)
            os.chmod(self.directory, 0o1777)
        except FileExistsError:
            pass
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        joining = self.directory / f".{name}.joining"
        fd = os.open(joining, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._path = self.directory / f"{name}{_SUFFIX}"
        os.rename(joining, self._path)
        self._fd = fd

    def leave(self) -> None:
        """Remove this process (a no-op when it is not a member)."""
        if self._fd is None or self._path is None:
            return
        self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd, self._path = None, None

    def members(self) -> int:
        """Live members, this process included when it joined; stale member files are removed."""
        return sum(path == self._path or _alive(path) for path in self.directory.glob(f"*{_SUFFIX}"))

    def share(self, cores: int | None = None) -> int:
        """This member's share of ``cores`` (default: :func:`host_cores`): ``max(1, cores // members)``."""
        self.join()
        return max(1, (cores or host_cores()) // self.members())

    def __enter__(self) -> Registry:
        self.join()
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()


_REGISTRY = Registry()  # this process's membership; it joins when it first trains


def training_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to ``requested`` (``--train-threads``), or else to this process's share of
    the host's cores (joining the registry); returns the count."""
    threads = requested or _REGISTRY.share()
    torch.set_num_threads(threads)
    return threads


@contextmanager
def membership() -> Iterator[None]:
    """Within the block, this process may join the registry (:func:`training_threads` joins); it leaves at the end."""
    try:
        yield
    finally:
        _REGISTRY.leave()


def leave() -> None:
    """This process trains no more (e.g. it hands the trials to worker processes): it leaves the registry."""
    _REGISTRY.leave()


class MeasurementPause:
    """Called before every training step: returns at once unless a latency measurement holds the host's measurement
    lock (``lock_path``, default hwprofile's), else once it is released. Costs two system calls when none does."""

    def __init__(self, lock_path: Path | None = None) -> None:
        self.lock_path = Path(lock_path or hwprofile.lock.LOCK_PATH)
        self.waited_s = 0.0  # time spent waiting so far
        self._fd: int | None = None

    def __call__(self) -> None:
        if self._fd is None:
            try:
                self._fd = os.open(self.lock_path, os.O_RDONLY)
            except FileNotFoundError:  # nothing has measured on this host yet
                return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # a measurement runs: wait for its end
            start = time.perf_counter()
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            self.waited_s += time.perf_counter() - start
        fcntl.flock(self._fd, fcntl.LOCK_UN)
