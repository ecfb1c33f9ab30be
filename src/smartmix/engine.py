"""The engine does all the I/O: it runs a policy over the items through a backend.

Profiling batches are called concurrently (every model the policy asks for, on every item of the batch);
each paid answer is written to the journal, when there is one, before anything uses it; agreement with the
reference is judged by the task's comparator and fed back to the policy. The plan the policy returns is
then executed, again concurrently. A ledger keeps the money per model and phase, and every item carries
what was spent on it, so the ``cost`` column sums to the bill.

Money is counted over the whole run, every attempt: a resumed run reads back what earlier attempts paid
(the journal), the ``--max-cost`` cap covers it all, and calls paid by an earlier attempt that this one
no longer uses are billed in an ``unused`` phase (charged to their items). Identical requests within a
run are sent once; every item that asked gets the answer. :meth:`Engine.stop` (the CLI's Ctrl-C and
SIGTERM) stops issuing calls; those in flight finish and are journaled.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from smartmix.backends.base import Backend, Completion, Request, endpoint_of
from smartmix.errors import BudgetExceeded, ConfigError, ProviderError, RunInterrupted
from smartmix.journal import digest_prefix, request_hash
from smartmix.models import Pool, estimate_tokens
from smartmix.policies import BatchSpec, Certificate, Guarantee, Plan, make_policy
from smartmix.result import ItemResult, Ledger, RunResult
from smartmix.scores import confidence_score
from smartmix.tasks import Comparator, Item, LabelComparator, Template

ProgressCallback = Callable[[dict[str, Any]], None]
WarningCallback = Callable[[str], None]


@dataclass
class EngineOptions:
    concurrency: int = 16
    batch_size: int = 10
    max_cost: float | None = None
    use_cache: bool = True
    params: dict[str, Any] = field(default_factory=dict)  # generation settings sent with every request
    method_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"budget": 0.0005} for margin
    chunk: int = 512  # application calls in flight per progress step

    def __post_init__(self) -> None:
        for name in ("concurrency", "batch_size", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # 0 would wait forever
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.max_cost is not None and not self.max_cost >= 0:
            raise ConfigError(f"max_cost must be a number of USD >= 0, got {self.max_cost!r}")


@dataclass
class _Answer:
    text: str | None
    parsed: str | None
    cost: float
    error: str | None = None
    completion: Completion | None = None
    score: float = math.nan


class Engine:
    def __init__(
        self,
        backend: Backend,
        pool: Pool,
        template: Template,
        comparator: Comparator,
        *,
        options: EngineOptions | None = None,
        journal: Any | None = None,
        run_id: str | None = None,
        progress: ProgressCallback | None = None,
        on_warning: WarningCallback | None = None,
    ):
        self.backend = backend
        self.pool = pool
        self.template = template
        self.comparator = comparator
        self.options = options or EngineOptions()
        self.journal = journal
        self.run_id = run_id
        self.progress = progress
        self.ledger = Ledger()
        self._semaphore = asyncio.Semaphore(self.options.concurrency)
        self._reserved = 0.0
        self._reservations = 0  # calls in flight holding part of the --max-cost budget
        self._released: asyncio.Event | None = None  # set when a reservation is given back
        self._unit_cost: dict[str, list[float]] = {}
        self._pending_records: list[tuple[tuple[Request, Completion, str, float], asyncio.Future]] = []
        self._journaled: set[int] | None = None  # digest prefixes of the requests in the journal; None: unknown
        self.on_warning = on_warning
        self.warnings: list[str] = []
        self._endpoints: dict[str, str | None] = {}
        self._shared: dict[str, asyncio.Future] = {}  # request hash -> its answer in this attempt
        self._stopping: str | None = None  # why no new call may start (a signal)
        # Journal rows of this run paid before this attempt and not read back yet: id -> (model, item, cost).
        # Their total (_spent_outside) plus the ledger is what the run has paid, all attempts together.
        self._unread: dict[int, tuple[str, str | None, float]] = {}
        self._spent_outside = 0.0
        self._answers_seen: dict[str, list[int]] = {}  # model -> [answers, blank, unparsed]
        self._labels_seen: set[str] = set()

    # -- public --------------------------------------------------------------------------------
    async def run(self, items: Sequence[Item], method: str, guarantee: Guarantee, seed: int = 0) -> RunResult:
        self.template.check(items)
        self._journaled = None
        if self.journal is not None and hasattr(self.journal, "request_digests"):
            # what the journal holds now (this run's calls, and with the cache on every run's): a call not
            # in it skips the look-up, a SQLite query that costs as much as the rest of the engine
            self._journaled = self.journal.request_digests(run_id=None if self.options.use_cache else self.run_id)
        self._begin()
        models = tuple(self.pool.names)
        spec = BatchSpec(
            len(items), models, guarantee, seed=seed, batch_size=self.options.batch_size,
            options=tuple(sorted(self.options.method_options.items())),
        )
        policy = make_policy(method, spec)
        if policy.needs_scores:
            self.options.params.setdefault("logprobs", True)
            self.options.params.setdefault("top_logprobs", 5)
        results = [ItemResult(id=item.id, answer=None, model=None, cost=0.0, phase="application") for item in items]
        reference = models[-1]
        profiled_answers: dict[tuple[int, str], _Answer] = {}

        profiled = 0
        while (batch := policy.next_batch()) is not None:
            names = [models[m] for m in batch.models]
            calls = [(int(i), name) for i in batch.items for name in names]
            answers = await self._call_all(items, calls, "profiling")
            profiled_answers.update(answers)
            agree = np.zeros((len(batch.items), len(names)), dtype=bool)
            cost = np.zeros_like(agree, dtype=float)
            score = np.full(agree.shape, np.nan)
            for row, i in enumerate(batch.items):
                ref = answers.get((int(i), reference))
                for col, name in enumerate(names):
                    got = answers[(int(i), name)]
                    cost[row, col] = got.cost
                    score[row, col] = got.score
                    results[i].cost += got.cost
                    if ref is not None and got.error is None and ref.error is None:
                        agree[row, col] = name == reference or self.comparator.agree(got.parsed, ref.parsed)
            policy.observe(batch, agree, cost, score)
            profiled += len(batch.items)
            self._report("profiling", profiled, None)

        plan = policy.plan()
        self._after_profiling(plan, models)
        for i in np.flatnonzero(plan.profiled):
            name = models[int(plan.assignment[i])]
            self._finish(results[i], profiled_answers[(int(i), name)], name, "profiling")
        await self._apply(items, plan, models, results)
        reference_cost, measured = self._reference_cost(plan, results, len(items))
        self._settle(results, reference_cost)
        return RunResult(
            items=results,
            certificate=_with_failures(plan.certificate, results),
            ledger=self.ledger,
            reference_cost=reference_cost,
            reference_cost_measured=measured,
            method=method,
            seed=seed,
            run_id=self.run_id,
            warnings=list(self.warnings),
        )

    @property
    def stopping(self) -> str | None:
        """Why the run was asked to stop (None: it was not)."""
        return self._stopping

    def stop(self, reason: str = "interrupted") -> None:
        """Start no new call from now on (calls in flight finish and are journaled); the run then raises
        :class:`~smartmix.errors.RunInterrupted`. Safe to call from a signal handler on the event loop."""
        self._stopping = reason
        if self._released is not None:  # calls waiting for budget wake up and see the stop
            self._released.set()

    # -- whole-run accounting and warnings ---------------------------------------------------------
    def _begin(self) -> None:
        """What earlier attempts of this run paid (from the journal): the cap and the bill include it."""
        self._shared = {}
        self._unread = {}
        if self.journal is not None and self.run_id is not None and hasattr(self.journal, "paid_calls"):
            self._unread = {cid: (m, item, cost) for cid, m, item, cost in self.journal.paid_calls(self.run_id)}
        self._spent_outside = sum(cost for _, _, cost in self._unread.values())

    def _read_back(self, completion: Completion) -> float:
        """The cost of an answer this run paid before, counted once however many items read it."""
        if not hasattr(self.journal, "paid_calls"):  # a journal-like object that cannot say: as recorded
            return float(completion.cost_usd or 0.0)
        row = self._unread.pop(completion.extra.get("journal_call_id"), None)
        if row is None:
            return 0.0
        self._spent_outside -= row[2]
        return row[2]

    def _settle(self, results: list[ItemResult], reference_cost: float) -> None:
        """Bill what earlier attempts paid and this one did not use (phase ``unused``, charged to the items
        they were made for), so the bill and the ``cost`` column cover everything the run paid."""
        by_id = {r.id: r for r in results}
        for model, item_id, cost in self._unread.values():
            self.ledger.add(model, "unused", cost)
            if item_id in by_id:
                by_id[item_id].cost += cost
            elif results:
                results[0].cost += cost  # an item no longer in the data: still the run's money
        self._unread, self._spent_outside = {}, 0.0
        total = self.ledger.total
        if math.isfinite(reference_cost) and reference_cost > 0 and total > reference_cost * (1 + 1e-9):
            self._warn(
                f"this run cost ${total:.4f}, more than the reference alone (${reference_cost:.4f}): profiling "
                "did not pay for itself here; --method reference is cheaper for a job like this."
            )

    def _warn(self, message: str) -> None:
        if message in self.warnings:
            return
        self.warnings.append(message)
        if self.on_warning is not None:
            self.on_warning(message)

    def _note_answer(self, model: str, text: str | None, parsed: str | None) -> None:
        seen = self._answers_seen.setdefault(model, [0, 0, 0])
        seen[0] += 1
        seen[1] += not (text or "").strip()
        seen[2] += parsed is None
        if parsed is not None:
            self._labels_seen.add(parsed)

    def _check_answers(self, final: bool) -> None:
        """Warn about answers that cannot lead anywhere: all blank, none parseable, labels never given."""
        n = sum(s[0] for s in self._answers_seen.values())
        if n == 0:
            return
        blank = sum(s[1] for s in self._answers_seen.values())
        unparsed = sum(s[2] for s in self._answers_seen.values())
        if blank == n:
            self._warn(
                f"all {n} answers so far are blank: check max_tokens, the template and the endpoint; "
                "blank answers never agree with anything."
            )
        elif unparsed == n:
            self._warn(
                f"none of the {n} answers so far could be read as an answer (labels: "
                f"{', '.join(getattr(self.comparator, 'labels', ()) or ['-'])}): check the labels and the prompt."
            )
        labels = getattr(self.comparator, "labels", None) if isinstance(self.comparator, LabelComparator) else None
        if final and labels and self._labels_seen and n >= 20:
            never = [label for label in labels if label not in self._labels_seen]
            if never:
                self._warn(
                    f"label(s) {', '.join(repr(x) for x in never)} never occurred in {n} answers: a typo in "
                    "labels? Answers that match no label count as disagreeing."
                )

    def _after_profiling(self, plan: Plan, models: tuple[str, ...]) -> None:
        self._check_answers(final=True)
        reference = len(models) - 1
        on_candidates = sum(c for (m, _), c in self.ledger.entries.items() if m != models[-1])
        if len(models) > 1 and not plan.chain and bool(np.all(plan.assignment == reference)) and on_candidates > 0:
            self._warn(
                "only the reference can meet this target on this data: every item is answered by the "
                f"reference, so the ${on_candidates:.4f} spent on the other models bought nothing; a lower "
                "--target, or --method reference, would cost less."
            )

    # -- phases --------------------------------------------------------------------------------
    async def _apply(self, items: Sequence[Item], plan: Plan, models: tuple[str, ...], results: list[ItemResult]) -> None:
        rest = [int(i) for i in np.flatnonzero(~plan.profiled)]
        if plan.chain:
            stages = [(models[m], t) for m, t in zip(plan.chain, plan.thresholds, strict=True)]
            stages.append((models[-1], -math.inf))
        else:
            stages = []
        total, done = len(rest), 0
        for start in range(0, total, self.options.chunk):
            block = rest[start : start + self.options.chunk]
            if stages:
                await self._apply_chain(items, block, stages, results)
            else:
                chunk = [(i, models[int(plan.assignment[i])]) for i in block]
                answers = await self._call_all(items, chunk, "application")
                for i, name in chunk:
                    got = answers[(i, name)]
                    results[i].cost += got.cost
                    self._finish(results[i], got, name, "application")
            done += len(block)
            self._report("application", done, total)

    async def _apply_chain(
        self, items: Sequence[Item], block: list[int], stages: list[tuple[str, float]], results: list[ItemResult]
    ) -> None:
        """Each stage answers the items still pending; it keeps those whose score clears its threshold."""
        pending = block
        for name, threshold in stages:
            answers = await self._call_all(items, [(i, name) for i in pending], "application")
            still = []
            for i in pending:
                got = answers[(i, name)]
                results[i].cost += got.cost
                last = threshold == -math.inf
                if last or (got.error is None and got.score > threshold):
                    self._finish(results[i], got, name, "application")
                else:
                    still.append(i)
            pending = still
            if not pending:
                break

    def _finish(self, result: ItemResult, answer: _Answer, model: str, phase: str) -> None:
        result.phase = phase
        if answer.error is not None:
            result.error = answer.error
            result.model = None
            return
        result.model = model
        # Labelled tasks report the canonical label; open answers are reported as the model wrote them.
        labelled = isinstance(self.comparator, LabelComparator) and answer.parsed is not None
        result.answer = answer.parsed if labelled else (answer.text or "").strip()

    def _reference_cost(
        self, plan: Plan, results: list[ItemResult], n_items: int
    ) -> tuple[float, bool]:
        """What the reference alone would have cost: measured when it answered everything, else estimated
        from its mean cost per call in this run."""
        reference = self.pool.names[-1]
        if not plan.profiled.any() and all(r.model == reference or r.error for r in results):
            return self.ledger.total, True
        spent = sum(c for (m, _), c in self.ledger.entries.items() if m == reference)
        calls = sum(k for (m, _), k in self.ledger.calls.items() if m == reference)
        if calls:
            return spent / calls * n_items, False
        return float("nan"), False

    # -- calls ---------------------------------------------------------------------------------
    async def _call_all(self, items: Sequence[Item], calls: list[tuple[int, str]], phase: str) -> dict:
        tasks = [self._call(items[i], name, phase) for i, name in calls]
        # Let every call in flight finish (and reach the journal) before an error stops the run.
        done = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return dict(zip(calls, done, strict=True))

    def _request(self, item: Item, model: str) -> Request:
        params = tuple(sorted(self.options.params.items()))
        if model not in self._endpoints:
            self._endpoints[model] = endpoint_of(self.backend, model)
        endpoint = self._endpoints[model]
        if endpoint is not None and getattr(self.backend, "answers_per_item", False):
            endpoint = f"{endpoint} item={item.id}"  # recorded outputs answer an item, not a prompt
        return Request(
            model=model, messages=self.template.render(item), item_id=item.id, params=params, endpoint=endpoint,
        )

    async def _call(self, item: Item, model: str, phase: str) -> _Answer:
        """One answer of ``model`` for ``item``; an identical request already made in this attempt (another
        item with the same prompt) is not sent again: its answer is shared, at no further cost."""
        request = self._request(item, model)
        key = request_hash(request)
        first = self._shared.get(key)
        if first is not None:
            got = await asyncio.shield(first)
            return _Answer(got.text, got.parsed, 0.0, got.error, got.completion, got.score)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._shared[key] = future
        try:
            answer = await self._call_once(request, model, phase)
        except BaseException as exc:
            self._shared.pop(key, None)
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            elif not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: whoever shares it gets it too
            raise
        future.set_result(answer)
        return answer

    async def _call_once(self, request: Request, model: str, phase: str) -> _Answer:
        async with self._semaphore:
            if self.journal is not None and self._maybe_journaled(request):
                # one query: this run's answer if it has one, else (with the cache on) any run's latest
                hit = self.journal.lookup(request, run_id=self.run_id, or_any_run=self.options.use_cache)
                if hit is not None and hit.extra.get("journal_run_id") == self.run_id:
                    # paid in this run before an interruption: read back, never paid again
                    return self._accept(model, phase, hit, self._read_back(hit))
                if hit is not None:  # the same request in an earlier run: free this time
                    await self._record(request, hit, phase, 0.0)
                    return self._accept(model, phase, hit, 0.0)
            self._check_stop()
            estimate = await self._reserve(model, request)
            try:
                self._check_stop()
                completion = await self.backend.complete(request)
            except ProviderError as exc:
                return _Answer(None, None, 0.0, error=str(exc))
            else:
                cost = self._price(model, request, completion)
                if self.journal is not None:
                    await self._record(request, completion, phase, cost)
                # In the ledger before the reservation is given back (no await in between), so a call
                # waiting for budget never sees this money as neither reserved nor spent.
                return self._accept(model, phase, completion, cost, paid=True)
            finally:
                self._release(estimate)

    def _check_stop(self) -> None:
        if self._stopping is not None:
            raise RunInterrupted(
                f"{self._stopping}: no new calls were started, and the calls in flight finished and were "
                "journaled (when a journal is used). Rerun the same command to continue: calls already paid are "
                "read back, not paid again."
            )

    def _maybe_journaled(self, request: Request) -> bool:
        return self._journaled is None or digest_prefix(request_hash(request)) in self._journaled

    async def _record(self, request: Request, completion: Completion, phase: str, cost: float) -> None:
        """Write one answer to the journal; returns once it is committed.

        Answers that arrive in the same event-loop turn are committed together, in one transaction (a
        commit costs ~0.1-0.3 ms however many rows it holds, which at high concurrency was the engine's
        largest cost). Nothing uses an answer before its commit returns, so a crash still loses only
        answers not yet used.
        """
        record_many = getattr(self.journal, "record_many", None)
        if record_many is None:  # a journal-like object without batches
            self.journal.record(self.run_id, request, completion, phase=phase, cost_usd=cost)
            return
        if self._journaled is not None:
            self._journaled.add(digest_prefix(request_hash(request)))
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if not self._pending_records:
            loop.call_soon(self._flush_records, record_many)
        self._pending_records.append(((request, completion, phase, cost), done))
        await done

    def _flush_records(self, record_many: Callable[..., None]) -> None:
        batch, self._pending_records = self._pending_records, []
        try:
            record_many(self.run_id, [call for call, _ in batch])
        except BaseException as exc:  # nobody may use an answer that is not in the journal
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        else:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _accept(self, model: str, phase: str, completion: Completion, cost: float, paid: bool = False) -> _Answer:
        self.ledger.add(model, phase, cost)
        if paid or cost > 0:  # a free cache hit says nothing about what the next call will cost
            self._unit_cost.setdefault(model, []).append(cost)
        parsed = self.comparator.parse(completion.text)
        self._note_answer(model, completion.text, parsed)
        return _Answer(completion.text, parsed, cost, completion=completion, score=confidence_score(completion))

    def _price(self, model: str, request: Request, completion: Completion) -> float:
        if completion.cost_usd is not None:
            return float(completion.cost_usd)
        spec = self.pool.spec(model)
        inp, out = completion.input_tokens, completion.output_tokens
        if (inp is None or out is None) and spec.call_price is None:
            # The provider did not report its usage (some local servers don't). The call is paid: count the
            # tokens as `preview` does, rather than stop here and pay for it again on every rerun.
            inp = estimate_tokens(request.prompt_text) if inp is None else inp
            out = max(1, estimate_tokens(completion.text)) if out is None else out
            completion.extra["usage_estimated"] = True
        return spec.cost(inp, out)

    async def _reserve(self, model: str, request: Request) -> float:
        """Hold back the worst plausible cost of a call, so --max-cost is never crossed by calls in flight.

        When the call does not fit only because of what other calls in flight hold back, wait for them to
        settle (they usually cost less than reserved); stop only when it does not fit with nothing in flight.
        """
        if self.options.max_cost is None:
            return 0.0
        estimate = self._estimate(model, request)
        while self.spent + self._reserved + estimate > self.options.max_cost:
            self._check_stop()
            if self._reservations == 0:
                raise BudgetExceeded(
                    f"stopping before a call to {model}: spent ${self.spent:.4f} of the --max-cost "
                    f"${self.options.max_cost:.4f}, and the next call could cost ~${estimate:.6f}. Everything paid "
                    "so far is kept in the run's journal; rerun the same command with a higher --max-cost to "
                    "continue (calls already paid are read back, not paid again)."
                )
            if self._released is None:
                self._released = asyncio.Event()
            await self._released.wait()
        self._reserved += estimate
        self._reservations += 1
        return estimate

    @property
    def spent(self) -> float:
        """What this run has paid so far, every attempt included (what --max-cost caps)."""
        return self.ledger.total + self._spent_outside

    def _release(self, estimate: float) -> None:
        if self.options.max_cost is None:
            return
        self._reservations -= 1
        self._reserved = self._reserved - estimate if self._reservations else 0.0
        if self._released is not None:
            self._released.set()
            self._released = None

    def _estimate(self, model: str, request: Request) -> float:
        seen = self._unit_cost.get(model)
        if seen:
            return 2.0 * max(seen)
        spec = self.pool.spec(model)
        max_tokens = int(request.param("max_tokens") or 64)
        try:
            return spec.cost(estimate_tokens(request.prompt_text), max_tokens)
        except Exception:
            return 0.0

    def _report(self, phase: str, done: int, total: int | None) -> None:
        if phase == "profiling":
            self._check_answers(final=False)
        if self.progress is not None:
            self.progress({"phase": phase, "done": done, "total": total, "spent": self.spent})


def _with_failures(certificate: Certificate, results: list[ItemResult]) -> Certificate:
    """The certificate once failed items count as not agreeing.

    The policy certified that at least T*n of the planned outputs agree; each item without an answer can
    remove at most one agreeing output, so at least T*n - failed still agree with the same probability.
    The statement then carries the lowered target; ``details`` keeps the one asked for. Shares say who
    really answered, failures apart.
    """
    failed = sum(r.error is not None for r in results)
    if not failed:
        return certificate
    n = len(results)
    shares: dict[str, float] = {}
    for r in results:
        if r.error is None and r.model is not None:
            shares[r.model] = shares.get(r.model, 0.0) + 1.0 / n
    shares["(failed)"] = failed / n
    details = {**certificate.details, "failed_items": failed, "requested_target": certificate.target}
    return replace(certificate, target=max(0.0, certificate.target - failed / n), shares=shares, details=details)


def run_sync(coro) -> Any:
    """Run a coroutine from synchronous code (the CLI and the Python API)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("smartmix.run() was called inside a running event loop; use 'await smartmix.arun(...)'")


__all__ = ["Engine", "EngineOptions", "run_sync"]
