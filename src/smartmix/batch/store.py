"""Where provider batches are remembered: two tables beside the journal's, in the same SQLite file.

``provider_batches`` holds one row per batch job (its provider id, model, input file, status, output and
error files); ``provider_batch_requests`` maps every ``custom_id`` to the batch that carries it. A row is
written *before* the batch is created at the provider (with the uploaded input file's id), and completed
with the batch id right after: a process killed in between finds the batch again by its input file
(:meth:`BatchStore.unsubmitted`), so nothing is submitted twice.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled", "refused"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS provider_batches (
    input_file_id  TEXT PRIMARY KEY,
    batch_id       TEXT,
    run_id         TEXT NOT NULL,
    model          TEXT NOT NULL,
    endpoint       TEXT NOT NULL,
    status         TEXT NOT NULL,
    n_requests     INTEGER NOT NULL,
    output_file_id TEXT,
    error_file_id  TEXT,
    created        REAL NOT NULL,
    updated        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS provider_batch_requests (
    custom_id      TEXT NOT NULL,
    input_file_id  TEXT NOT NULL,
    PRIMARY KEY (custom_id, input_file_id)
);
CREATE INDEX IF NOT EXISTS provider_batch_requests_by_id ON provider_batch_requests (custom_id);
"""


@dataclass(frozen=True)
class BatchRecord:
    input_file_id: str
    batch_id: str | None
    run_id: str
    model: str
    endpoint: str
    status: str
    n_requests: int
    output_file_id: str | None
    error_file_id: str | None
    created: float
    updated: float

    @property
    def pending(self) -> bool:
        return self.status not in TERMINAL


class BatchStore:
    """Provider batches of every run in one SQLite file (the run directory's journal file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def intend(self, run_id: str, model: str, endpoint: str, input_file_id: str, custom_ids: Iterable[str]) -> None:
        """Remember an uploaded input file and the requests it holds, before the batch is created."""
        now = time.time()
        ids = list(custom_ids)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO provider_batches VALUES (?, NULL, ?, ?, ?, 'uploaded', ?, NULL, NULL, ?, ?)",
                (input_file_id, run_id, model, endpoint, len(ids), now, now),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO provider_batch_requests VALUES (?, ?)", [(c, input_file_id) for c in ids]
            )
            self._db.execute("COMMIT")

    def update(self, input_file_id: str, *, batch_id: str | None = None, status: str | None = None,
               output_file_id: str | None = None, error_file_id: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE provider_batches SET batch_id = COALESCE(?, batch_id), status = COALESCE(?, status), "
                "output_file_id = COALESCE(?, output_file_id), error_file_id = COALESCE(?, error_file_id), "
                "updated = ? WHERE input_file_id = ?",
                (batch_id, status, output_file_id, error_file_id, time.time(), input_file_id),
            )

    def batches(self, run_id: str | None = None) -> list[BatchRecord]:
        query = "SELECT * FROM provider_batches"
        args: tuple = ()
        if run_id is not None:
            query += " WHERE run_id = ?"
            args = (run_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created", args).fetchall()
        return [BatchRecord(*row) for row in rows]

    def pending(self, run_id: str | None = None) -> list[BatchRecord]:
        return [b for b in self.batches(run_id) if b.pending]

    def custom_ids(self, input_file_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT custom_id FROM provider_batch_requests WHERE input_file_id = ?", (input_file_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def batches_holding(self, custom_ids: Iterable[str]) -> dict[str, list[str]]:
        """For each custom id, the input files (oldest first) of the batches that carried it."""
        out: dict[str, list[str]] = {}
        ids = list(custom_ids)
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT r.custom_id, r.input_file_id FROM provider_batch_requests r JOIN provider_batches b "
                    f"ON b.input_file_id = r.input_file_id WHERE r.custom_id IN ({marks}) ORDER BY b.created",
                    chunk,
                ).fetchall()
                for custom_id, input_file_id in rows:
                    out.setdefault(custom_id, []).append(input_file_id)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
