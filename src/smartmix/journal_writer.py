"""A journal writer off the caller's path: callers queue calls, one thread commits them in batches.

:meth:`BackgroundJournalWriter.record` only puts the call on a queue (microseconds, never blocks); one
writer thread commits whatever has queued up in one transaction (:meth:`Journal.record_many`), so a busy
caller pays one SQLite commit per batch, not per call, and never waits for the disk.
:meth:`BackgroundJournalWriter.close` commits everything still queued before it returns.

Callers that must not go on before their row is committed (the engine: a run uses no answer that is not
in the journal) ``await writer.commit(...)`` instead: same queue and batches, and the await returns once
the row is committed (or raises if it could not be stored). Every waiter of a batch is woken by one
callback on its event loop. This is the one journal writer: the server records through it, the engine
commits each run's calls through one, and so do virtual models (:mod:`smartmix.backends.composite`) for
the real calls they make.

The journal is used from two threads (this writer, and the caller's look-ups): :class:`Journal` keeps one
connection behind one lock, so a transaction is never interleaved with another thread's statement.

One bad row never costs the others: every call is made storable first (:func:`storable`: an answer that
is not text is stored as its JSON text, a cost that is not a finite number as 0 with a note), and a batch
whose insert fails anyway is written again row by row, so only a row that cannot be stored at all is
lost, and it is counted and reported.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import math
import queue
import sys
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from smartmix.domain import Completion, Request

__all__ = ["BackgroundJournalWriter", "Call", "RowSink", "storable"]

Call = tuple[Request, Completion, str, float]  # (request, completion, phase, cost_usd), as Journal.record_many takes


class RowSink(Protocol):
    """Where the rows go (:class:`smartmix.journal.Journal` is one): all of ``calls`` committed, or none."""

    def record_many(self, run_id: str, calls: Sequence[Call]) -> None: ...

_STOP = object()


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _as_count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def storable(call: Call) -> Call:
    """``call`` with every field in a type SQLite stores: text as text, counts as integers, the cost as a
    finite number (else 0, noted in ``extra["cost_note"]``)."""
    request, completion, phase, cost = call
    if (
        type(completion.text) is str and type(cost) is float and math.isfinite(cost) and type(phase) is str
        and completion.top_logprobs is None and type(completion.extra) is dict
        and (completion.input_tokens is None or type(completion.input_tokens) is int)
        and (completion.output_tokens is None or type(completion.output_tokens) is int)
    ):
        return call  # already storable: the common case, checked without copying
    extra = dict(completion.extra) if isinstance(completion.extra, dict) else {"extra": _as_text(completion.extra)}
    if not isinstance(cost, int | float) or isinstance(cost, bool) or not math.isfinite(cost):
        extra["cost_note"] = f"not a number: {_as_text(cost)[:80]}"
        cost = 0.0
    if not isinstance(completion.text, str):
        extra["answer_type"] = type(completion.text).__name__
    top = completion.top_logprobs
    if top is not None:
        try:
            top = tuple((str(t), float(lp)) for t, lp in top)
        except (TypeError, ValueError):
            top = None
    fixed = dataclasses.replace(
        completion,
        text=_as_text(completion.text),
        input_tokens=_as_count(completion.input_tokens),
        output_tokens=_as_count(completion.output_tokens),
        top_logprobs=top,
        extra=extra,
    )
    return request, fixed, str(phase), float(cost)


class BackgroundJournalWriter:
    """Batches :meth:`record` calls into ``journal`` under ``run_id`` from a background thread.

    ``written`` and ``failed`` count rows committed and rows that could not be stored at all; a loss is
    reported on stderr when nobody awaits the row (:meth:`record`), and raised to who does (:meth:`commit`).
    """

    def __init__(self, journal: RowSink, run_id: str, *, max_batch: int = 512):
        self.journal = journal
        self.run_id = run_id
        self.max_batch = max_batch
        self.written = 0
        self.failed = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="smartmix-journal", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a process that exits without closing still loses nothing queued

    def record(self, request: Request, completion: Completion, phase: str, cost_usd: float) -> None:
        """Queue one call (never blocks); written directly once the writer is closed."""
        self._put(((request, completion, phase, cost_usd), None))

    async def commit(self, request: Request, completion: Completion, phase: str, cost_usd: float) -> None:
        """Queue one call and return once it is committed; raises the error if it could not be stored."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._put(((request, completion, phase, cost_usd), (loop, done)))
        await done

    def _put(self, entry: tuple) -> None:
        with self._lock:
            if not self._closed:
                self._queue.put(entry)
                return
        self._write([entry])

    def close(self) -> None:
        """Commit everything queued, then stop the writer thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        atexit.unregister(self.close)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            if stop:
                return

    def _write(self, entries: list[tuple]) -> None:
        rows, waiters, settled = [], [], []
        for call, waiter in entries:
            try:
                rows.append(storable(call))
                waiters.append(waiter)
            except Exception as exc:  # noqa: BLE001 - one unstorable call must not cost the batch
                self._lost(waiter, exc)
                settled.append((waiter, exc))
        try:
            self.journal.record_many(self.run_id, rows)
        except Exception:  # noqa: BLE001 - find the row at fault: write them one by one
            for row, waiter in zip(rows, waiters, strict=True):
                try:
                    self.journal.record_many(self.run_id, [row])
                except Exception as exc:  # noqa: BLE001 - a full disk must not take the caller down; say so
                    self._lost(waiter, exc)
                    settled.append((waiter, exc))
                else:
                    self.written += 1
                    settled.append((waiter, None))
        else:
            self.written += len(rows)
            settled.extend((waiter, None) for waiter in waiters)
        _wake(settled)

    def _lost(self, waiter: tuple | None, exc: BaseException) -> None:
        self.failed += 1
        if waiter is None:  # nobody else hears of it
            print(f"smartmix: could not journal a call: {type(exc).__name__}: {exc}", file=sys.stderr)


def _wake(settled: list[tuple[tuple | None, BaseException | None]]) -> None:
    """Wake the :meth:`BackgroundJournalWriter.commit` callers of a batch: one callback per event loop."""
    by_loop: dict[Any, list[tuple[asyncio.Future, BaseException | None]]] = {}
    for waiter, error in settled:
        if waiter is not None:
            loop, done = waiter
            by_loop.setdefault(loop, []).append((done, error))
    for loop, outcomes in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, outcomes)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            pass


def _settle(outcomes: list[tuple[asyncio.Future, BaseException | None]]) -> None:
    for done, error in outcomes:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
