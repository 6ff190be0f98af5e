"""Measurements cached in a small SQLite file, keyed by what decides the number.

The key is a hash of: the model file's bytes, the device fingerprint (CPU model, cores, board,
GPUs — not the host name), the backend and its version, and the setup (provider, threads,
spinning, batch, dims, precision, graph optimisation). The protocol settings (run counts, time
limits) are not in it: they change how precise a number is, not what it measures. Unstable
measurements are not stored, so they are taken again next time.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from hwprofile.fingerprint import fingerprint_key

_SCHEMA = """CREATE TABLE IF NOT EXISTS measurements (
    key TEXT PRIMARY KEY, model_sha256 TEXT NOT NULL, setup TEXT NOT NULL, result TEXT NOT NULL,
    created REAL NOT NULL)"""


def cache_key(model_sha256: str, fingerprint: dict[str, Any], setup: dict[str, Any], backend_version: str) -> str:
    text = json.dumps({"model": model_sha256, "device": fingerprint_key(fingerprint), "setup": setup,
                       "backend_version": backend_version}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class MeasurementCache:
    """``get``/``put`` measurement dicts by key; safe for several processes (SQLite's locking)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> dict[str, Any] | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT result FROM measurements WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, result: dict[str, Any], *, model_sha256: str, setup: dict[str, Any]) -> None:
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?)",
                       (key, model_sha256, json.dumps(setup, sort_keys=True), json.dumps(result), time.time()))

    def __len__(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])
