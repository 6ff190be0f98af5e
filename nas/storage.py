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
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from nas.config import ConfigError

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:"
STORAGE_FORMS = "sqlite:///FILE, postgresql://USER@HOST/DB or journal:FILE"
SQLITE_HEADER = b"SQLite format 3\0"
CONNECT_TIMEOUT_S = 10  # a database server that does not answer in this time is an error, not a hang
MAX_RETRIES = 2


def create_storage(url: str, heartbeat_s: int) -> optuna.storages.BaseStorage:
    """``sqlite:///...``, ``postgresql://...`` or ``journal:FILE``; one that cannot be opened is a :class:`ConfigError`.

    Database storages get heartbeats: a trial whose worker stops beating for three intervals is
    failed and re-queued (at most :data:`MAX_RETRIES` times) by the next worker that looks.
    """
    database = _parse(url)
    try:
        if database is None:
            return JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX)))
        engine_kwargs = {"connect_args": {"timeout": 60}} if database.get_backend_name() == "sqlite" else \
            {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are stable enough
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                              grace_period=3 * heartbeat_s,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
    except (SQLAlchemyError, ImportError, OSError, RuntimeError, ValueError, LookupError, TypeError) as error:
        # a file that is not a database or journal (JSON lines that are not Optuna's), a server that refuses, a
        # schema of another Optuna version
        kind = "a journal file" if database is None else "a database"
        raise ConfigError(f"Cannot open storage {shown_url(url)} as {kind} of Optuna studies: {str(error).strip()}"
                          .splitlines()[0]) from None


def check_storage(url: str, out: str | Path) -> None:
    """Raise a :class:`ConfigError` unless ``url`` is a supported storage whose file's folder exists or is ``out``
    (which a search creates), and an existing SQLite file is a database; opens and creates nothing."""
    file = storage_file(url)
    if file is None:
        return
    if file.is_dir():
        raise ConfigError(f"Storage {shown_url(url)} names a folder; it must name a file.")
    if not file.parent.is_dir() and file.parent.resolve() != Path(out).resolve():
        raise ConfigError(f"The folder of storage {shown_url(url)} does not exist: {str(file.parent)!r}.")
    if storage_exists(url) and not url.startswith(JOURNAL_PREFIX):
        try:
            with file.open("rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as error:
            raise ConfigError(f"Cannot read storage {shown_url(url)}: {error.strerror}.") from None
        if header != SQLITE_HEADER:  # SQLite would overwrite a short file that is not a database
            raise ConfigError(f"Storage {shown_url(url)} is not a SQLite database: {str(file)!r} holds other data.")


def storage_file(url: str) -> Path | None:
    """The file of a SQLite or journal storage; None for a database server or in-memory SQLite."""
    database = _parse(url)
    if database is None:
        return Path(url.removeprefix(JOURNAL_PREFIX))
    if database.get_backend_name() == "sqlite" and database.database not in (None, "", ":memory:"):
        return Path(database.database)
    return None


def storage_exists(url: str) -> bool:
    """Whether the storage at ``url`` is there already (opening a missing SQLite or journal file creates it)."""
    file = storage_file(url)
    if file is not None:
        return file.is_file() and file.stat().st_size > 0
    database = _parse(url)
    return database is not None and database.get_backend_name() == "postgresql"  # a server (else in-memory SQLite)


def shown_url(url: str) -> str:
    """``url`` as errors and reports show it: without a password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


def _parse(url: str) -> URL | None:
    """The database URL of a SQLite or PostgreSQL storage (None for ``journal:FILE``); others are a ConfigError."""
    if url.startswith(JOURNAL_PREFIX):
        if not url.removeprefix(JOURNAL_PREFIX):
            raise ConfigError(f"Storage {url!r} names no file; expected journal:FILE.")
        return None
    try:
        database = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"Storage {url!r} is not a URL; expected {STORAGE_FORMS}.") from None
    if database.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"Storage {shown_url(url)}: {database.drivername!r} storages are not supported; use "
                          f"{STORAGE_FORMS}.")
    return database


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
