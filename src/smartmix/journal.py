"""The journal: every paid call, written to SQLite before anything uses it.

One file per run directory (``runs/<run-id>/journal.sqlite``), or one file shared by many runs; both
work. It answers three questions:

- *resume*: ``lookup(request, run_id=...)`` finds a call this run already paid for (after a crash the
  rerun pays only for what is missing);
- *cache*: ``lookup(request)`` finds the same request answered by any run;
- *accounting*: ``runs()`` / ``calls()`` say what was asked, what was answered and what it cost.

Requests are identified by :func:`request_hash` (model, messages, params; not ``item_id``, so identical
prompts for different items share an answer). The database runs in WAL mode with
``synchronous=NORMAL``: each :meth:`Journal.record` is its own committed transaction, durable against
a crash or kill of the process (not against a power cut; pass ``synchronous="FULL"`` for that) and
cheap (tens of thousands of commits per second). Readers in other processes never block the writer.

The schema is versioned (table ``schema_version``) and migrated forward on open. Configs are stored
with secret-looking fields removed; API keys never reach the journal.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smartmix.domain import Completion, Request
from smartmix.errors import ConfigError

__all__ = ["SCHEMA_VERSION", "Journal", "RunSummary", "digest_prefix", "request_hash", "scrub_secrets"]

_V1 = """
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    created     TEXT NOT NULL,
    updated     TEXT NOT NULL,
    config_json TEXT NOT NULL,
    seed        INTEGER,
    status      TEXT NOT NULL,
    cost_usd    REAL NOT NULL DEFAULT 0
);
CREATE TABLE calls (
    id            INTEGER PRIMARY KEY,
    run_id        TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    model         TEXT NOT NULL,
    item_id       TEXT,
    phase         TEXT NOT NULL,
    answer        TEXT NOT NULL,
    input_tokens  INTEGER,
    output_tokens INTEGER,
    cost_usd      REAL NOT NULL,
    top_logprobs  TEXT,
    confidence    REAL,
    latency_ms    REAL,
    attempts      INTEGER,
    extra_json    TEXT,
    created       REAL NOT NULL
);
CREATE INDEX calls_by_run_request ON calls (run_id, request_hash);
CREATE INDEX calls_by_request ON calls (request_hash);
"""

# Migration n (1-based) takes the schema from version n-1 to n. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)

_CALL_COLUMNS = (
    "id", "run_id", "request_hash", "model", "item_id", "phase", "answer", "input_tokens", "output_tokens",
    "cost_usd", "top_logprobs", "confidence", "latency_ms", "attempts", "extra_json", "created",
)

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|passwd|authorization|bearer|credential)", re.I)
_SECRET_VALUE = re.compile(r"^(sk-|sk_|rk-|xai-|gsk_|AIza)[A-Za-z0-9_\-]{8,}")


def request_hash(request: Request) -> str:
    """sha256 over the endpoint, the model, the messages and the params (sorted by name); ``item_id`` is
    left out (identical prompts of different items share an answer)."""
    payload: dict[str, Any] = {
        "model": request.model,
        "messages": [[m.role, m.content] for m in request.messages],
        "params": sorted([str(k), v] for k, v in request.params),
    }
    if request.endpoint is not None:  # absent for backends that cannot say who answers
        payload["endpoint"] = request.endpoint
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def digest_prefix(digest: str) -> int:
    """The first 64 bits of a :func:`request_hash`, as an int (what :meth:`Journal.request_digests` holds)."""
    return int(digest[:16], 16)


def scrub_secrets(value: Any) -> Any:
    """A copy of a config with secret-looking fields (api_key, token, ...) and key-looking strings removed.

    Fields that *name* an environment variable (``*_env``) are kept: they hold no secret.
    """
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            name = str(k)
            if _SECRET_KEY.search(name) and not name.lower().endswith("_env"):
                continue
            out[name] = scrub_secrets(v)
        return out
    if isinstance(value, list | tuple):
        return [scrub_secrets(v) for v in value]
    if isinstance(value, str) and _SECRET_VALUE.match(value):
        return "***"
    return value


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    created: str
    status: str
    n_calls: int
    cost_usd: float
    seed: int | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class Journal:
    """SQLite journal of runs and paid calls. Safe to share between threads: one connection
    (``check_same_thread=False``) and one lock around every statement and transaction, so a
    :class:`~smartmix.journal_writer.BackgroundJournalWriter` commits from its thread while the engine
    looks calls up from its event loop (a look-up waits at most for the commit in progress)."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL"):
        if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
            raise ConfigError("Journal synchronous must be NORMAL, FULL or EXTRA")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._known_runs: set[str] = set()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"cannot open the journal {self.path}: {exc}. Check the path, or move the file away to start afresh."
            ) from exc

    # ------------------------------------------------------------------------------------ schema
    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)")
            current = int(db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
            if current > SCHEMA_VERSION:
                raise ConfigError(
                    f"the journal {self.path} has schema version {current}, newer than this smartmix "
                    f"understands ({SCHEMA_VERSION}). Upgrade smartmix or use another journal file."
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version, applied) VALUES (?, ?)", (version, _now_iso()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -------------------------------------------------------------------------------------- runs
    def start_run(self, run_id: str, config: Mapping[str, Any], seed: int) -> bool:
        """Register a run (status ``running``). True if it already existed: the caller is resuming it.

        On resume the stored config and seed are kept (compare them with :meth:`run`); only the status
        goes back to ``running``.
        """
        config_json = json.dumps(scrub_secrets(config), sort_keys=True, default=str)
        now = _now_iso()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                exists = db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None
                if exists:
                    db.execute("UPDATE runs SET status = 'running', updated = ? WHERE run_id = ?", (now, run_id))
                else:
                    db.execute(
                        "INSERT INTO runs (run_id, created, updated, config_json, seed, status) "
                        "VALUES (?, ?, ?, ?, ?, 'running')",
                        (run_id, now, now, config_json, seed),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._known_runs.add(run_id)
        return exists

    def finish_run(self, run_id: str, status: str) -> None:
        """Set the run's final status (e.g. ``done``, ``failed``, ``interrupted``) and its total cost."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE runs SET status = ?, updated = ?, "
                "cost_usd = (SELECT COALESCE(SUM(cost_usd), 0) FROM calls WHERE calls.run_id = runs.run_id) "
                "WHERE run_id = ?",
                (status, _now_iso(), run_id),
            )
            if cur.rowcount == 0:
                raise ConfigError(f"the journal {self.path} has no run '{run_id}' to finish")

    def runs(self) -> list[RunSummary]:
        """All runs, oldest first, with live call counts and costs (right even for a crashed run)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT r.run_id, r.created, r.status, COUNT(c.id), COALESCE(SUM(c.cost_usd), 0), r.seed, "
                "r.config_json FROM runs r LEFT JOIN calls c ON c.run_id = r.run_id "
                "GROUP BY r.run_id ORDER BY r.created, r.rowid"
            ).fetchall()
        return [RunSummary(r[0], r[1], r[2], int(r[3]), float(r[4]), r[5], json.loads(r[6])) for r in rows]

    def run(self, run_id: str) -> RunSummary | None:
        return next((r for r in self.runs() if r.run_id == run_id), None)

    # ------------------------------------------------------------------------------------- calls
    def record(self, run_id: str, request: Request, completion: Completion, *, phase: str, cost_usd: float) -> None:
        """Append one paid call; committed before it returns. ``cost_usd`` is what this call cost now
        (0 for a call served from the cache)."""
        self.record_many(run_id, [(request, completion, phase, cost_usd)])

    def record_many(self, run_id: str, calls: Sequence[tuple[Request, Completion, str, float]]) -> None:
        """Append several paid calls ``(request, completion, phase, cost_usd)`` in one transaction,
        committed before it returns: all of them or none. One commit costs about as much as one row, so
        the :class:`~smartmix.journal_writer.BackgroundJournalWriter` commits what queued up together."""
        if run_id not in self._known_runs:
            with self._lock:
                found = self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if not found:
                raise ConfigError(f"run '{run_id}' was not started in the journal {self.path}; call start_run first")
            self._known_runs.add(run_id)
        rows = [self._call_row(run_id, *call) for call in calls]
        if not rows:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO calls (run_id, request_hash, model, item_id, phase, answer, input_tokens, "
                    "output_tokens, cost_usd, top_logprobs, confidence, latency_ms, attempts, extra_json, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _call_row(run_id: str, request: Request, completion: Completion, phase: str, cost_usd: float) -> tuple:
        extra = {k: v for k, v in completion.extra.items() if k != "attempts"}
        try:
            extra_json = json.dumps(extra, sort_keys=True, default=str) if extra else None
        except ValueError:
            extra_json = None
        return (
            run_id,
            request_hash(request),
            request.model,
            request.item_id,
            phase,
            completion.text,
            completion.input_tokens,
            completion.output_tokens,
            float(cost_usd),
            json.dumps([[t, lp] for t, lp in completion.top_logprobs]) if completion.top_logprobs else None,
            _finite(completion.confidence),
            _finite(completion.latency_ms),
            completion.extra.get("attempts"),
            extra_json,
            time.time(),
        )

    def lookup(self, request: Request, *, run_id: str | None = None, or_any_run: bool = False) -> Completion | None:
        """The latest recorded answer to this request: in ``run_id`` only (resume), or in any run (cache).

        With ``run_id`` and ``or_any_run=True``, one query does both: this run's answer when it has one,
        else the latest of any run (tell them apart by ``extra["journal_run_id"]``).
        The returned completion carries the recorded usage and cost; ``extra`` has ``journal_run_id``
        (the run that paid), ``journal_phase`` and ``from_journal=True`` so the caller does not pay twice.
        """
        digest = request_hash(request)
        cols = ", ".join(_CALL_COLUMNS)
        with self._lock:
            if run_id is not None and or_any_run:
                row = self._db.execute(
                    f"SELECT {cols} FROM calls WHERE request_hash = ? ORDER BY run_id = ? DESC, id DESC LIMIT 1",
                    (digest, run_id),
                ).fetchone()
            elif run_id is None:
                row = self._db.execute(
                    f"SELECT {cols} FROM calls WHERE request_hash = ? ORDER BY id DESC LIMIT 1", (digest,)
                ).fetchone()
            else:
                row = self._db.execute(
                    f"SELECT {cols} FROM calls WHERE run_id = ? AND request_hash = ? ORDER BY id DESC LIMIT 1",
                    (run_id, digest),
                ).fetchone()
        if row is None:
            return None
        call = self._row_dict(row)
        extra = dict(call["extra"] or {})
        extra.update(
            attempts=call["attempts"], from_journal=True, journal_run_id=call["run_id"], journal_phase=call["phase"],
            journal_call_id=call["id"],
        )
        return Completion(
            model=call["model"],
            text=call["answer"],
            input_tokens=call["input_tokens"],
            output_tokens=call["output_tokens"],
            cost_usd=call["cost_usd"],
            top_logprobs=tuple((t, lp) for t, lp in call["top_logprobs"]) if call["top_logprobs"] else None,
            confidence=call["confidence"],
            latency_ms=call["latency_ms"],
            extra=extra,
        )

    def request_digests(self, *, run_id: str | None = None, limit: int = 500_000) -> set[int] | None:
        """The requests recorded so far (in ``run_id``, or in any run), as 64-bit prefixes of their
        :func:`request_hash`; None when there are more than ``limit`` of them (too many to hold).

        A request whose prefix is not in the set is certainly not in the journal (as of now): the engine
        skips :meth:`lookup` for it, which is most calls of a fresh run.
        """
        where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
        with self._lock:
            count = self._db.execute(f"SELECT COUNT(*) FROM calls {where}", args).fetchone()[0]
            if count > limit:
                return None
            rows = self._db.execute(f"SELECT request_hash FROM calls {where}", args).fetchall()
        return {digest_prefix(r[0]) for r in rows}

    def paid_calls(self, run_id: str) -> list[tuple[int, str, str | None, float]]:
        """``(call id, model, item id, cost_usd)`` of every call recorded in a run, all attempts, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, model, item_id, cost_usd FROM calls WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
        return [(int(r[0]), r[1], r[2], float(r[3])) for r in rows]

    def calls(self, run_id: str) -> list[dict[str, Any]]:
        """Every call of a run in the order recorded, as dicts (``top_logprobs`` as [[token, logprob], ...])."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
        return [self._row_dict(r) for r in rows]

    @staticmethod
    def _row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
        call = dict(zip(_CALL_COLUMNS, row, strict=True))
        call["top_logprobs"] = json.loads(call["top_logprobs"]) if call["top_logprobs"] else None
        extra_json = call.pop("extra_json")
        call["extra"] = json.loads(extra_json) if extra_json else None
        return call

    # ------------------------------------------------------------------------------------- close
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"
