"""The journal of ``smartmix serve``, written off the request path.

Handlers only put a row on a queue (microseconds); one writer thread commits whatever has queued up in one
transaction (:meth:`Journal.record_many`), so a busy server pays one SQLite commit per batch, not per
request, and never waits for the disk. Rows land within milliseconds; :meth:`JournalWriter.close` (on the
server's shutdown) commits everything still queued before it returns. Rows hold what the journal always
held for a served request: model, answer, cost and a hash; never the prompt or a key.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import queue
import sys
import threading

from smartmix.domain import Completion, Message, Request
from smartmix.journal import Journal

_STOP = object()


class JournalWriter:
    """Batches ``record(model, response_id, answer, cost)`` into the journal from a background thread."""

    def __init__(self, journal: Journal, run_id: str, *, max_batch: int = 512):
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
        atexit.register(self.close)  # a server run without lifespan events still loses nothing at exit

    def record(self, model: str, response_id: object, answer: str, cost_usd: float) -> None:
        """Queue one served call (never blocks); written directly once the writer is closed."""
        row = (model, response_id, answer, cost_usd)
        with self._lock:
            if not self._closed:
                self._queue.put(row)
                return
        self._write([row])

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

    def _write(self, rows: list[tuple]) -> None:
        calls = []
        for model, response_id, answer, cost in rows:
            digest = hashlib.sha256(json.dumps(response_id, default=str).encode()).hexdigest()
            request = Request(model=model, messages=(Message("user", digest),), item_id=None)
            calls.append((request, Completion(model=model, text=answer), "serve", cost))
        try:
            self.journal.record_many(self.run_id, calls)
            self.written += len(calls)
        except Exception as exc:  # a full disk must not take the server down; say so loudly
            self.failed += len(calls)
            print(f"smartmix serve: could not journal {len(calls)} call(s): {exc}", file=sys.stderr)
