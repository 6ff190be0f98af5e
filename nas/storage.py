"""Optuna storages from URLs, heartbeats, and recovery of trials whose worker died."""

from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:"
MAX_RETRIES = 2


def create_storage(url: str, heartbeat_s: int) -> optuna.storages.BaseStorage:
    """``sqlite:///...``, ``postgresql://...`` (any SQLAlchemy URL) or ``journal:FILE``.

    Database storages get heartbeats: a trial whose worker stops beating for three intervals is
    failed and re-queued (at most :data:`MAX_RETRIES` times) by the next worker that looks.
    """
    if url.startswith(JOURNAL_PREFIX):
        return JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX)))
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are stable enough
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                          grace_period=3 * heartbeat_s,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))


def storage_exists(url: str) -> bool:
    """Whether the storage at ``url`` is there already (opening a missing SQLite or journal file creates it)."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url.removeprefix(JOURNAL_PREFIX)).is_file()
    if url.startswith("sqlite"):
        database = make_url(url).database
        return database is not None and database not in ("", ":memory:") and Path(database).is_file()
    return True  # a database server: whether it holds the study is known when the study is loaded


def worker_identity() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def recover_dead_local_trials(study: optuna.Study) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker process on this host no longer exists.

    This catches a ``kill -9`` at once on resume; workers on other hosts are left to heartbeats.
    Returns the numbers of the recovered trials.
    """
    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", {})
        if worker.get("host") != host or _alive(int(worker["pid"])):
            continue
        storage = study._storage  # Optuna has no public API to fail another process's trial
        storage.set_trial_user_attr(trial._trial_id, "failure", f"worker {worker['pid']} on {host} died")
        if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            recovered.append(trial.number)
            if trial.user_attrs.get("retries", 0) < MAX_RETRIES:
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number,
                                                              "retries": trial.user_attrs.get("retries", 0) + 1})
    if recovered:
        log.warning("Trials %s were interrupted (their worker died): marked failed and queued again.", recovered)
    return recovered


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
