"""The engine does all the I/O: it runs a policy over the items through a backend.

Profiling batches are called concurrently (every model the policy asks for, on every item of the batch);
each paid answer is written to the journal, when there is one, before anything uses it; agreement with the
reference is judged by the task's comparator and fed back to the policy. The plan the policy returns is
then executed, again concurrently. A ledger keeps the money per model and phase, and every item carries
what was spent on it, so the ``cost`` column sums to the bill.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from smartmix.backends.base import Backend, Completion, Request
from smartmix.errors import BudgetExceeded, ConfigError, ProviderError
from smartmix.journal import digest_prefix, request_hash
from smartmix.models import Pool, estimate_tokens
from smartmix.policies import BatchSpec, Certificate, Guarantee, Plan, make_policy
from smartmix.result import ItemResult, Ledger, RunResult
from smartmix.scores import confidence_score
from smartmix.tasks import Comparator, Item, LabelComparator, Template

ProgressCallback = Callable[[dict[str, Any]], None]


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
        self.unparseable: dict[str, int] = {}  # per model: answers the comparator could not read (disagreements)

    # -- public --------------------------------------------------------------------------------
    async def run(self, items: Sequence[Item], method: str, guarantee: Guarantee, seed: int = 0) -> RunResult:
        self.template.check(items)
        self._journaled = None
        if self.journal is not None and hasattr(self.journal, "request_digests"):
            # what the journal holds now (this run's calls, and with the cache on every run's): a call not
            # in it skips the look-up, a SQLite query that costs as much as the rest of the engine
            self._journaled = self.journal.request_digests(run_id=None if self.options.use_cache else self.run_id)
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
        for i in np.flatnonzero(plan.profiled):
            name = models[int(plan.assignment[i])]
            self._finish(results[i], profiled_answers[(int(i), name)], name, "profiling")
        await self._apply(items, plan, models, results)
        reference_cost, measured = self._reference_cost(plan, results, len(items))
        return RunResult(
            items=results,
            certificate=_with_parse_counts(_with_failures(plan.certificate, results), self.comparator, self.unparseable),
            ledger=self.ledger,
            reference_cost=reference_cost,
            reference_cost_measured=measured,
            method=method,
            seed=seed,
            run_id=self.run_id,
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
        return Request(model=model, messages=self.template.render(item), item_id=item.id, params=params)

    async def _call(self, item: Item, model: str, phase: str) -> _Answer:
        request = self._request(item, model)
        async with self._semaphore:
            if self.journal is not None and self._maybe_journaled(request):
                # one query: this run's answer if it has one, else (with the cache on) any run's latest
                hit = self.journal.lookup(request, run_id=self.run_id, or_any_run=self.options.use_cache)
                if hit is not None and hit.extra.get("journal_run_id") == self.run_id:
                    # paid in this run before an interruption: read back, never paid again
                    return self._accept(model, phase, hit, float(hit.cost_usd or 0.0))
                if hit is not None:  # the same request in an earlier run: free this time
                    await self._record(request, hit, phase, 0.0)
                    return self._accept(model, phase, hit, 0.0)
            estimate = await self._reserve(model, request)
            try:
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
        if parsed is None:
            self.unparseable[model] = self.unparseable.get(model, 0) + 1
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
        while self.ledger.total + self._reserved + estimate > self.options.max_cost:
            if self._reservations == 0:
                raise BudgetExceeded(
                    f"stopping before a call to {model}: spent ${self.ledger.total:.4f} of the --max-cost "
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
        if self.progress is not None:
            self.progress({"phase": phase, "done": done, "total": total, "spent": self.ledger.total})


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


def _with_parse_counts(certificate: Certificate, comparator: Comparator, unparseable: dict[str, int]) -> Certificate:
    """The certificate with the comparator's name and, per model, how many answers it could not read."""
    from smartmix.comparators import comparator_name

    details = {**certificate.details, "comparator": comparator_name(comparator), "unparseable": dict(unparseable)}
    return replace(certificate, details=details)


def run_sync(coro) -> Any:
    """Run a coroutine from synchronous code (the CLI and the Python API)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("smartmix.run() was called inside a running event loop; use 'await smartmix.arun(...)'")


__all__ = ["Engine", "EngineOptions", "run_sync"]
