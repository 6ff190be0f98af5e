"""The host's cores shared by its training processes (a registry of live members) and training paused while another
process measures latency; real processes and real file locks throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import distill
from distill.loop import LoopConfig, fit
from nas import cores
from nas.cores import MeasurementPause, Registry

# A member: joins the registry in argv[1], says so, then at each line read prints its count of live members and its
# share of 4 cores; it ends when its input closes.
_MEMBER = """
import sys
from pathlib import Path
from nas.cores import Registry
registry = Registry(Path(sys.argv[1]))
registry.join()
print("joined", flush=True)
for _ in sys.stdin:
    print(registry.members(), registry.share(4), flush=True)
"""
# Holds the measurement lock (hwprofile's, at $HWPROFILE_LOCK) for argv[1] seconds.
_MEASURER = """
import sys, time
import hwprofile
with hwprofile.exclusive_measurement():
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


@contextmanager
def _python(code: str, *args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, **(env or {})})
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _ask(member: subprocess.Popen[str]) -> tuple[int, int]:
    """The (live members, share of 4 cores) that ``member`` counts now."""
    assert member.stdin is not None and member.stdout is not None
    member.stdin.write("?\n")
    member.stdin.flush()
    members, share = member.stdout.readline().split()
    return int(members), int(share)


def test_two_processes_each_count_two_members_and_a_dead_one_is_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "members"
    with _python(_MEMBER, str(directory)) as first, _python(_MEMBER, str(directory)) as second:
        assert first.stdout is not None and second.stdout is not None
        assert first.stdout.readline().strip() == second.stdout.readline().strip() == "joined"
        assert _ask(first) == _ask(second) == (2, 2)
        assert Registry(directory).members() == 2  # an outsider (not joined) counts them too
        os.kill(second.pid, signal.SIGKILL)  # no chance to leave: its member file stays behind
        second.wait()
        assert len(list(directory.glob("*.member"))) == 2
        assert _ask(first) == (1, 4)  # the dead member is not counted ...
        assert len(list(directory.glob("*.member"))) == 1  # ... and its stale file is gone
        with Registry(directory) as third:
            assert third.members() == 2 and third.share(5) == 2 and _ask(first) == (2, 2)
        assert _ask(first) == (1, 4)  # left on exit


def test_a_share_is_at_least_one_thread(tmp_path: Path) -> None:
    with Registry(tmp_path) as first, Registry(tmp_path) as second:
        assert first.members() == second.members() == 2
        assert first.share(1) == 1 and first.share(3) == 1


def test_training_threads_are_the_asked_count_or_this_process_share(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "_REGISTRY", Registry(tmp_path))
    before = torch.get_num_threads()
    try:
        assert cores.training_threads(3) == torch.get_num_threads() == 3
        with cores.membership():
            assert cores.training_threads() == torch.get_num_threads() == cores.host_cores()
            assert len(list(tmp_path.glob("*.member"))) == 1
        assert not list(tmp_path.glob("*.member"))  # left at the end of the block
    finally:
        torch.set_num_threads(before)


def test_the_pause_returns_at_once_when_nothing_measures(tmp_path: Path) -> None:
    never_measured = MeasurementPause(tmp_path / "missing.lock")
    never_measured()
    lock = tmp_path / "measure.lock"
    lock.touch()
    idle = MeasurementPause(lock)
    start = time.perf_counter()
    for _ in range(1000):
        idle()
    assert time.perf_counter() - start < 0.5 and idle.waited_s == never_measured.waited_s == 0.0


def test_training_steps_wait_while_another_process_measures(tmp_path: Path) -> None:
    lock, hold_s = tmp_path / "measure.lock", 1.0
    pause = MeasurementPause(lock)
    step_times: list[float] = []
    model = nn.Linear(1, 1)

    def batch_losses(rows: np.ndarray, step: int, total: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        step_times.append(time.perf_counter())
        loss = model(torch.from_numpy(rows).float()[:, None]).pow(2).mean()
        return loss, {"square": loss}

    with _python(_MEASURER, str(hold_s), env={"HWPROFILE_LOCK": str(lock)}) as measurer:
        assert measurer.stdout is not None and measurer.stdout.readline().strip() == "held"
        held = time.perf_counter()
        fit(model, LoopConfig(steps=3, batch_size=4), 10, batch_losses,
            placement=distill.Placement.on("cpu", before_step=pause))
        assert measurer.wait(timeout=10) == 0
    assert len(step_times) == 3 and step_times[0] - held > 0.5 * hold_s  # the first step waited for the release
    assert pause.waited_s > 0.5 * hold_s
    assert step_times[-1] - step_times[0] < hold_s  # the steps after it did not wait again
