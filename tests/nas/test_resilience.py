"""Crash safety and distributed search on real storages: kill -9, PostgreSQL workers, stale trials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from nas.cli import main


def _common(cache_dir: Path) -> list[str]:
    return ["--teacher-epochs", "3", "--cache-dir", str(cache_dir), "--sampler", "random", "--early-stop", "off",
            "--refine", "0"]  # resumption is what these tests check, not refinement


def _wait_for(predicate, timeout: float = 300.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_kill_9_mid_trial_then_resume(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "run"
    args = ["search", "--trials", "3", "--steps", "150", "--out", str(out), *_common(cache_dir)]
    log = (tmp_path / "search.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "nas", *args], stdout=log, stderr=subprocess.STDOUT)
    storage = f"sqlite:///{out / 'study.db'}"

    def one_done_one_running() -> bool:
        if not (out / "config.json").is_file():  # written once the study exists
            return False
        trials = optuna.load_study(storage=storage, study_name="search").trials
        states = [t.state for t in trials]
        running = [t for t in trials if t.state == TrialState.RUNNING and "arch" in t.user_attrs]
        return TrialState.COMPLETE in states and bool(running)

    _wait_for(one_done_one_running)
    before = optuna.load_study(storage=storage, study_name="search").trials
    completed_before = {t.number: t.values for t in before if t.state == TrialState.COMPLETE}
    killed = next(t for t in before if t.state == TrialState.RUNNING)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    assert main(args) == 0
    trials = optuna.load_study(storage=storage, study_name="search").trials
    assert {t.number: t.values for t in trials if t.number in completed_before} == completed_before
    assert trials[killed.number].state == TrialState.FAIL
    assert "died" in trials[killed.number].user_attrs["failure"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == killed.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert (out / "pareto.json").is_file() and (out / "trials.csv").read_text().count("\n") == len(trials) + 1


def test_two_workers_share_one_postgresql_study(postgres_url: str, tmp_path: Path, cache_dir: Path) -> None:
    args = ["search", "--trials", "6", "--steps", "20", "--workers", "2", "--storage", postgres_url,
            "--study", "two-workers", "--out", str(tmp_path / "run"), *_common(cache_dir)]
    assert main(args) == 0
    study = optuna.load_study(storage=postgres_url, study_name="two-workers")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert 6 <= len(complete) <= 7  # 7 only when both workers finish a trial at the same moment
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert main(args) == 0  # finished: a re-run adds nothing
    assert len(optuna.load_study(storage=postgres_url, study_name="two-workers").trials) == len(study.trials)


def test_no_more_workers_start_than_trials_are_missing(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "run"
    storage = f"journal:{out / 'study.journal'}"
    args = ["search", "--trials", "1", "--steps", "10", "--workers", "3", "--storage", storage, "--out", str(out),
            *_common(cache_dir)]
    assert main(args) == 0
    trials = optuna.load_study(storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))),
                               study_name="search").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # three workers would have started three trials


def test_stale_trial_of_a_dead_remote_worker_is_retried(postgres_url: str, tmp_path: Path, cache_dir: Path) -> None:
    args = ["search", "--trials", "2", "--steps", "10", "--heartbeat", "1", "--storage", postgres_url,
            "--study", "stale", "--out", str(tmp_path / "run"), *_common(cache_dir)]
    assert main(args) == 0
    # A worker on another machine starts a trial, beats once, and dies.
    storage = RDBStorage(postgres_url, heartbeat_interval=1, grace_period=3)
    study = optuna.load_study(storage=storage, study_name="stale")
    orphan = study.ask()
    storage.record_heartbeat(orphan._trial_id)
    orphan.set_user_attr("worker", {"host": "edge-box-7", "pid": 4242})
    time.sleep(4)

    args[args.index("--trials") + 1] = "3"
    assert main(args) == 0
    trials = optuna.load_study(storage=postgres_url, study_name="stale").trials
    assert trials[orphan.number].state == TrialState.FAIL
    retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == orphan.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


def test_workers_refuse_sqlite(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["search", "--workers", "2", "--out", str(tmp_path)]) == 2
    assert "SQLite is unsafe with concurrent writers" in capsys.readouterr().err
