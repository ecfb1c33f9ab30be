"""Turn a list of requests into provider batch jobs and back into completions, without paying twice.

Every request is known by its ``custom_id`` (the journal's request hash, so identical requests are one).
Before anything is submitted the runner asks the :class:`~smartmix.batch.store.BatchStore` which of them a
batch already carries — from an earlier, interrupted attempt — and polls or reads those batches instead of
submitting again. New requests are grouped by model (a batch holds one model) into batches of at most
``max_requests``; the input file is uploaded, remembered, and only then the batch is created. Requests a
batch could not answer for a passing reason (server error, rate limit, expiry, cancellation) are submitted
again in smaller batches, at most ``max_rounds`` times; a request the provider rejects (HTTP 4xx) is
reported as failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smartmix.batch.openai_api import BatchAPI
from smartmix.batch.store import TERMINAL, BatchRecord, BatchStore
from smartmix.domain import Completion, Request
from smartmix.errors import ProviderError

log = logging.getLogger("smartmix.batch")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
RETRYABLE_CODES = frozenset({"batch_expired", "batch_cancelled", "rate_limit_exceeded", "server_error"})

BodyFor = Callable[[Request], dict[str, Any]]
Parse = Callable[[dict[str, Any], Request], Completion]
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BatchSettings:
    max_requests: int = 50_000  # OpenAI's limit per batch
    poll_interval_s: float = 15.0
    poll_max_interval_s: float = 120.0
    max_rounds: int = 4  # submissions per request at most (the first one included)
    wait_s: float | None = None  # stop waiting after this long; pending batches stay journaled

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_rounds < 1 or self.poll_interval_s <= 0:
            raise ValueError("max_requests and max_rounds must be >= 1 and poll_interval_s > 0")


@dataclass
class BatchOutcome:
    """What came back: completions and errors by custom id, and what it took."""

    completions: dict[str, Completion] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    submitted_batches: int = 0
    submitted_requests: int = 0
    resubmitted_requests: int = 0
    resumed_batches: int = 0
    pending: list[str] = field(default_factory=list)  # batches still running when wait_s ran out


class BatchStillPending(ProviderError):
    """Batches are still running at the provider; rerun the same command later to collect them."""


class BatchRunner:
    """Runs requests as provider batches for one run; ``api_for(model)`` gives each model's batch service."""

    def __init__(self, *, api_for: Callable[[str], BatchAPI], body_for: BodyFor, parse: Parse, store: BatchStore,
                 run_id: str, settings: BatchSettings = BatchSettings(), progress: ProgressFn | None = None):
        self.api_for = api_for
        self.body_for = body_for
        self.parse = parse
        self.store = store
        self.run_id = run_id
        self.settings = settings
        self.progress = progress

    async def run(self, requests: Mapping[str, Request]) -> BatchOutcome:
        outcome = BatchOutcome()
        wanted = dict(requests)
        failures: dict[str, tuple[bool, str]] = {}  # custom id -> (retryable, message)
        holding = self.store.batches_holding(wanted)
        rounds = {cid: len(files) for cid, files in holding.items()}
        earlier = {f for files in holding.values() for f in files}
        records = {b.input_file_id: b for b in self.store.batches() if b.input_file_id in earlier}
        outcome.resumed_batches = len(records)
        await self._settle(list(records.values()), wanted, outcome, failures)
        while True:
            todo = [cid for cid in wanted if cid not in outcome.completions and cid not in outcome.errors
                    and (cid not in failures or failures[cid][0])]
            fresh = [cid for cid in todo if rounds.get(cid, 0) < self.settings.max_rounds]
            for cid in todo:
                if cid not in fresh:
                    outcome.errors[cid] = failures.get(cid, (False, "no answer"))[1]
            if not fresh or outcome.pending:
                break
            size = self.settings.max_requests
            if any(rounds.get(cid, 0) for cid in fresh):  # a retry: smaller batches fail smaller
                size = max(1, min(size, (len(fresh) + 1) // 2))
            submitted = await self._submit(fresh, wanted, size, outcome)
            for cid in fresh:
                if rounds.get(cid, 0):
                    outcome.resubmitted_requests += 1
                rounds[cid] = rounds.get(cid, 0) + 1
                failures.pop(cid, None)
            await self._settle(submitted, wanted, outcome, failures)
        for cid, (_, message) in failures.items():
            if cid not in outcome.completions and cid not in outcome.errors and not outcome.pending:
                outcome.errors[cid] = message
        return outcome

    # -- submitting ------------------------------------------------------------------------------------
    async def _submit(self, ids: list[str], wanted: Mapping[str, Request], size: int,
                      outcome: BatchOutcome) -> list[BatchRecord]:
        by_model: dict[str, list[str]] = {}
        for cid in ids:
            by_model.setdefault(wanted[cid].model, []).append(cid)
        records = []
        for model, cids in by_model.items():
            api = self.api_for(model)
            for start in range(0, len(cids), size):
                chunk = cids[start : start + size]
                lines = [
                    json.dumps({"custom_id": cid, "method": "POST", "url": api.endpoint,
                                "body": self.body_for(wanted[cid])}, separators=(",", ":"))
                    for cid in chunk
                ]
                content = ("\n".join(lines) + "\n").encode()
                input_file_id = await api.upload(content, f"smartmix-{self.run_id}-{model}.jsonl")
                self.store.intend(self.run_id, model, api.endpoint, input_file_id, chunk)
                try:
                    batch = await api.create(input_file_id, {"smartmix_run": self.run_id})
                except Exception as exc:
                    if not _is_http_refusal(exc):
                        raise  # unknown outcome (e.g. a dropped connection): the rerun looks the batch up
                    self.store.update(input_file_id, status="refused")
                    raise ProviderError(
                        f"the provider refused a batch of {len(chunk)} requests for model '{model}': {exc}. "
                        "Nothing was charged for it. What to do: check that this endpoint offers batch jobs "
                        "(/v1/files and /v1/batches), or run with --mode sync."
                    ) from None
                self.store.update(input_file_id, batch_id=batch["id"], status=batch["status"])
                outcome.submitted_batches += 1
                outcome.submitted_requests += len(chunk)
                records.extend(b for b in self.store.batches(self.run_id) if b.input_file_id == input_file_id)
                self._report("submitted", outcome)
        return records

    # -- waiting and reading -----------------------------------------------------------------------------
    async def _settle(self, records: list[BatchRecord], wanted: Mapping[str, Request], outcome: BatchOutcome,
                      failures: dict[str, tuple[bool, str]]) -> None:
        """Wait for every batch to end (or for wait_s), then read its output and error files."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        interval = self.settings.poll_interval_s
        states: dict[str, dict[str, Any]] = {}
        for record in records:
            api = self.api_for(record.model)
            if record.batch_id is None:  # uploaded, then interrupted: was the batch created?
                found = await api.find(record.input_file_id)
                if found is None:
                    found = await api.create(record.input_file_id, {"smartmix_run": self.run_id})
                    outcome.submitted_batches += 1
                self.store.update(record.input_file_id, batch_id=found["id"], status=found["status"])
                states[record.input_file_id] = found
            elif record.pending:
                states[record.input_file_id] = await api.retrieve(record.batch_id)
            else:
                states[record.input_file_id] = {
                    "id": record.batch_id, "status": record.status, "output_file_id": record.output_file_id,
                    "error_file_id": record.error_file_id,
                }
        by_file = {r.input_file_id: r for r in records}
        while True:
            running = [f for f, s in states.items() if s["status"] not in TERMINAL]
            for f in list(states):
                self.store.update(f, status=states[f]["status"], output_file_id=states[f].get("output_file_id"),
                                  error_file_id=states[f].get("error_file_id"))
            self._report("waiting", outcome, running=len(running))
            if not running:
                break
            if self.settings.wait_s is not None and loop.time() - started > self.settings.wait_s:
                outcome.pending = [states[f]["id"] for f in running]
                break
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, self.settings.poll_max_interval_s)
            for f in running:
                states[f] = await self.api_for(by_file[f].model).retrieve(states[f]["id"])
        for f, state in states.items():
            if state["status"] in TERMINAL:
                await self._read(by_file[f], state, wanted, outcome, failures)

    async def _read(self, record: BatchRecord, state: dict[str, Any], wanted: Mapping[str, Request],
                    outcome: BatchOutcome, failures: dict[str, tuple[bool, str]]) -> None:
        api = self.api_for(record.model)
        seen: set[str] = set()
        for key in ("output_file_id", "error_file_id"):
            file_id = state.get(key)
            if not file_id:
                continue
            for raw in (await api.content(file_id)).decode("utf-8", "replace").splitlines():
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                cid = line.get("custom_id") if isinstance(line, dict) else None
                if cid not in wanted or cid in outcome.completions:
                    continue
                seen.add(cid)
                self._take(cid, line, wanted[cid], outcome, failures)
        status = state["status"]
        if status == "failed":
            errors = (state.get("errors") or {}).get("data") or []
            why = "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict)) or "the batch failed"
            for cid in self.store.custom_ids(record.input_file_id):
                if cid in wanted and cid not in seen and cid not in outcome.completions:
                    failures[cid] = (False, f"batch {state['id']} failed validation at the provider: {why}")
        else:
            for cid in self.store.custom_ids(record.input_file_id):
                if cid in wanted and cid not in seen and cid not in outcome.completions:
                    failures[cid] = (True, f"batch {state['id']} ended '{status}' without answering it")

    def _take(self, cid: str, line: dict[str, Any], request: Request, outcome: BatchOutcome,
              failures: dict[str, tuple[bool, str]]) -> None:
        response = line.get("response") if isinstance(line.get("response"), dict) else None
        error = line.get("error") if isinstance(line.get("error"), dict) else None
        status = response.get("status_code") if response else None
        if response is not None and status == 200 and isinstance(response.get("body"), dict):
            try:
                completion = self.parse(response["body"], request)
            except Exception as exc:  # garbage in one answer is that request's failure, retried
                failures[cid] = (True, f"unusable answer in the batch output: {exc}")
                return
            completion.extra["batch"] = True
            outcome.completions[cid] = completion
            failures.pop(cid, None)
            return
        code = str(error.get("code")) if error else None
        message = str((error or {}).get("message") or "")
        if response is not None and isinstance(response.get("body"), dict):
            body_error = response["body"].get("error")
            if isinstance(body_error, dict):
                message = str(body_error.get("message") or message)
        retryable = (status in RETRYABLE_STATUS) or (code in RETRYABLE_CODES) or (status is None and code is None)
        failures[cid] = (retryable, f"batch request failed ({status or code}): {message[:200]}")

    def _report(self, phase: str, outcome: BatchOutcome, **extra: Any) -> None:
        if self.progress is not None:
            self.progress({"phase": f"batch-{phase}", "batches": outcome.submitted_batches,
                           "requests": outcome.submitted_requests, **extra})


def _is_http_refusal(exc: BaseException) -> bool:
    """An HTTP 4xx answer to 'create the batch': the batch certainly does not exist."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500

