"""The engine does all the I/O: it is the live answer source the core's driver runs a policy on.

The driver (:mod:`smartmix.core.driver`) decides — profile rounds, then the plan with the one chain rule —
and asks the engine for answers. The engine calls them concurrently through a backend (every model the
policy asks for, on every item of the batch); each paid answer is written to the journal, when there is
one, before anything uses it; agreement with the reference is judged by the task's comparator. A ledger
keeps the money per model and phase, and every item carries what was spent on it, so the ``cost`` column
sums to the bill.

Money is counted over the whole run, every attempt: a resumed run reads back what earlier attempts paid
(the journal), the ``--max-cost`` cap covers it all, and calls paid by an earlier attempt that this one
no longer uses are billed in an ``unused`` phase (charged to their items). Identical requests within a
run are sent once; every item that asked gets the answer. :meth:`Engine.stop` (the CLI's Ctrl-C and
SIGTERM) stops issuing calls; those in flight finish and are journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from smartmix import defaults
from smartmix.backends.base import Backend, endpoint_of
from smartmix.batch.prices import batch_price_factor
from smartmix.core.driver import Execution, execute
from smartmix.core.source import Answers, Observation
from smartmix.deferred import DeferredBackend, run_deferred
from smartmix.domain import Completion, Request
from smartmix.errors import BudgetExceeded, ConfigError, ProviderError, RunInterrupted
from smartmix.journal import digest_prefix, request_hash
from smartmix.journal_writer import BackgroundJournalWriter
from smartmix.models import Pool, estimate_tokens
from smartmix.policies import BatchSpec, Certificate, Guarantee, Plan, make_policy
from smartmix.result import ItemResult, Ledger, RunResult
from smartmix.scores import confidence_score
from smartmix.tasks import Comparator, Item, LabelComparator, Template

ProgressCallback = Callable[[dict[str, Any]], None]
WarningCallback = Callable[[str], None]


@dataclass
class EngineOptions:
    concurrency: int = defaults.CONCURRENCY
    batch_size: int = 10
    max_cost: float | None = None
    use_cache: bool = True
    params: dict[str, Any] = field(default_factory=dict)  # generation settings sent with every request
    method_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"budget": 0.0005} for margin
    chunk: int = 512  # application calls in flight per progress step
    calibration: Any = None  # smartmix.calibration.Calibration: past outputs that choose the plan shape

    def __post_init__(self) -> None:
        for name in ("concurrency", "batch_size", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # 0 would wait forever
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.max_cost is not None and not self.max_cost >= 0:
            raise ConfigError(f"max_cost must be a number of USD >= 0, got {self.max_cost!r}")


class CallJournal(Protocol):
    """What the engine needs of a journal (:class:`smartmix.journal.Journal` is one): find a paid call,
    record paid calls durably (several in one transaction: the engine writes through a
    :class:`~smartmix.journal_writer.BackgroundJournalWriter`), and say cheaply which requests it holds.
    A journal that also has ``paid_calls(run_id)`` lets a resumed run count what earlier attempts paid."""

    def lookup(self, request: Request, *, run_id: str | None = None, or_any_run: bool = False) -> Completion | None: ...

    def record_many(self, run_id: str, calls: Sequence[tuple[Request, Completion, str, float]]) -> None: ...

    def request_digests(self, *, run_id: str | None = None, limit: int = 500_000) -> set[int] | None: ...


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
        journal: CallJournal | None = None,
        run_id: str | None = None,
        progress: ProgressCallback | None = None,
        application_backend: DeferredBackend | None = None,
        on_warning: WarningCallback | None = None,
    ):
        self.backend = backend
        # The application phase may go through a bulk channel (provider batch jobs, a Ray pipeline): the
        # same calls, journal and cap, sent together (smartmix.deferred). Profiling stays synchronous.
        self.application_backend = application_backend
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
        self._writer: BackgroundJournalWriter | None = None  # commits this run's rows, one thread, in batches
        self._journaled: set[int] | None = None  # digest prefixes of the requests in the journal; None: unknown
        self.unparseable: dict[str, int] = {}  # per model: answers the comparator could not read (disagreements)
        self._params: dict[str, Any] = dict(self.options.params)  # generation settings of this run
        self._items: Sequence[Item] = ()
        # every profiling answer, per (item, model); per item, what the latest application answer reports
        # (answer, error): an item's chain stops at the answer it keeps, so the latest is final
        self._profiled: dict[tuple[int, str], _Answer] = {}
        self._applied: list[tuple[str | None, str | None] | None] = []
        self.execution: Execution | None = None  # what the last run decided: plan, who answered, costs
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
    async def run(
        self, items: Sequence[Item], method: str, guarantee: Guarantee, seed: int = 0,
        predicted: np.ndarray | None = None,
    ) -> RunResult:
        """Run ``method`` on ``items``: the core's driver (:func:`smartmix.core.execute`) with this engine as
        its live answer source. ``predicted``: the router's predicted agreement (items x pool models)."""
        self.template.check(items)
        self._journaled = None
        if self.journal is not None:
            # what the journal holds now (this run's calls, and with the cache on every run's): a call not
            # in it skips the look-up, a SQLite query that costs as much as the rest of the engine
            self._journaled = self.journal.request_digests(run_id=None if self.options.use_cache else self.run_id)
        self._begin()
        models = tuple(self.pool.names)
        spec = BatchSpec(
            len(items), models, guarantee, seed=seed, batch_size=self.options.batch_size,
            options=tuple(sorted(self.options.method_options.items())), predicted=predicted,
            calibration=self.options.calibration,
        )
        policy = make_policy(method, spec)
        self._params = dict(self.options.params)  # the caller's options stay as they were
        if policy.needs_scores:
            self._params.setdefault("logprobs", True)
            self._params.setdefault("top_logprobs", 5)
        self._items = items
        self._profiled, self._applied = {}, [None] * len(items)
        if self.journal is not None:
            self._writer = BackgroundJournalWriter(self.journal, self.run_id)
        try:
            execution = self.execution = await execute(policy, self)
        finally:
            if self._writer is not None:  # every call awaited its commit: nothing is left but the thread
                self._writer.close()
                self._writer = None
        results = [self._result(item, i, execution) for i, item in enumerate(items)]
        reference_cost, measured = self._reference_cost(execution.plan, results, len(items))
        self._settle(results, reference_cost)
        return RunResult(
            items=results,
            certificate=with_parse_counts(execution.certificate, self.comparator, self.unparseable),
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
        message = costlier_warning(self.ledger.total, reference_cost)
        if message is not None:
            self._warn(message)

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
        for message in answer_warnings(self._answers_seen, self._labels_seen, self.comparator, final):
            self._warn(message)

    def _after_profiling(self, plan: Plan, models: tuple[str, ...]) -> None:
        self._check_answers(final=True)
        on_candidates = sum(c for (m, _), c in self.ledger.entries.items() if m != models[-1])
        message = reference_only_warning(plan, len(models), on_candidates)
        if message is not None:
            self._warn(message)

    # -- the live answer source (smartmix.core.source.AnswerSource) --------------------------------
    @property
    def chunk(self) -> int | None:
        # a bulk channel sends each stage of the plan as one round (a batch job per model)
        return None if self.application_backend is not None else self.options.chunk

    async def profile(self, items: np.ndarray, models: tuple[int, ...]) -> Observation:
        names = [self.pool.names[m] for m in models]
        reference = self.pool.names[-1]
        calls = [(int(i), name) for i in items for name in names]
        # an answer profiled earlier in this run (a score-first pass, say) is reused: never asked or paid twice
        reused = {call: self._profiled[call] for call in calls if call in self._profiled}
        answers = await self._call_all(self._items, [c for c in calls if c not in reused], "profiling")
        agree = np.zeros((len(items), len(names)), dtype=bool)
        cost = np.zeros_like(agree, dtype=float)
        score = np.full(agree.shape, np.nan)
        failed = np.zeros_like(agree)
        for row, i in enumerate(items):
            ref = answers.get((int(i), reference)) or reused.get((int(i), reference))
            for col, name in enumerate(names):
                call = (int(i), name)
                got = answers.get(call)
                if got is None:
                    got = reused[call]
                else:
                    self._profiled[call] = got
                    cost[row, col] = got.cost
                score[row, col] = got.score
                failed[row, col] = got.error is not None
                if ref is not None and got.error is None and ref.error is None:
                    agree[row, col] = name == reference or self.comparator.agree(got.parsed, ref.parsed)
        return Observation(agree, cost, score, failed)

    async def answer(self, items: np.ndarray, models: np.ndarray) -> Answers:
        calls = [(int(i), self.pool.names[int(m)]) for i, m in zip(items, models, strict=True)]
        if self.application_backend is not None:
            answers = await self._call_all_deferred(calls)
        else:
            answers = await self._call_all(self._items, calls, "application")
        got = [answers[call] for call in calls]
        for i, a in zip(items, got, strict=True):
            self._applied[int(i)] = self._output(a)
        return Answers(
            np.array([a.cost for a in got], dtype=float),
            np.array([a.score if a.error is None else math.nan for a in got], dtype=float),
            np.array([a.error is not None for a in got], dtype=bool),
        )

    def planned(self, plan: Plan) -> None:
        self._after_profiling(plan, tuple(self.pool.names))

    def report(self, phase: str, done: int, total: int | None) -> None:
        self._report(phase, done, total)

    # -- results -------------------------------------------------------------------------------
    def _output(self, answer: _Answer) -> tuple[str | None, str | None]:
        """(answer, error) as the item's result reports them, should this answer be final."""
        if answer.error is not None:
            return None, answer.error
        # Labelled tasks report the canonical label; open answers are reported as the model wrote them.
        labelled = isinstance(self.comparator, LabelComparator) and answer.parsed is not None
        return (answer.parsed if labelled else (answer.text or "").strip()), None

    def _result(self, item: Item, i: int, execution: Execution) -> ItemResult:
        model = int(execution.final[i])
        profiled = bool(execution.plan.profiled[i])
        text, error = self._output(self._profiled[(i, self.pool.names[model])]) if profiled else self._applied[i]
        return ItemResult(
            id=item.id, answer=text, model=None if error is not None else self.pool.names[model],
            cost=float(execution.spent[i]), phase="profiling" if profiled else "application", error=error,
        )

    def _reference_cost(
        self, plan: Plan, results: list[ItemResult], n_items: int
    ) -> tuple[float, bool]:
        reference = self.pool.names[-1]
        only_reference = all(r.model == reference or r.error for r in results)
        return reference_cost(plan, only_reference, self.ledger, reference, n_items)

    # -- calls ---------------------------------------------------------------------------------
    async def _call_all(self, items: Sequence[Item], calls: list[tuple[int, str]], phase: str) -> dict:
        tasks = [self._call(items[i], name, phase) for i, name in calls]
        # Let every call in flight finish (and reach the journal) before an error stops the run.
        done = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return dict(zip(calls, done, strict=True))

    async def _call_all_deferred(self, calls: list[tuple[int, str]]) -> dict:
        """The application calls through the bulk channel: each call runs the usual path up to the provider,
        and whatever is waiting there is sent together (see :func:`smartmix.deferred.run_deferred`)."""
        tasks = [asyncio.ensure_future(self._call(self._items[i], name, "application")) for i, name in calls]
        try:
            await run_deferred(tasks, self.application_backend)
        finally:
            done = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return dict(zip(calls, done, strict=True))

    def _request(self, item: Item, model: str) -> Request:
        params = tuple(sorted(self._params.items()))
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
        key = request_hash(request)  # the journal's key too
        first = self._shared.get(key)
        if first is not None:
            got = await asyncio.shield(first)
            return _Answer(got.text, got.parsed, 0.0, got.error, got.completion, got.score)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._shared[key] = future
        try:
            answer = await self._call_once(request, key, model, phase)
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

    async def _call_once(self, request: Request, key: str, model: str, phase: str) -> _Answer:
        deferred = phase == "application" and self.application_backend is not None
        backend = self.application_backend if deferred else self.backend
        async with contextlib.nullcontext() if deferred else self._semaphore:
            if self.journal is not None and self._maybe_journaled(key):
                # one query: this run's answer if it has one, else (with the cache on) any run's latest
                hit = self.journal.lookup(request, run_id=self.run_id, or_any_run=self.options.use_cache)
                if hit is not None and hit.extra.get("journal_run_id") == self.run_id:
                    # paid in this run before an interruption: read back, never paid again
                    return self._accept(model, phase, hit, self._read_back(hit))
                if hit is not None:  # the same request in an earlier run: free this time
                    await self._record(request, key, hit, phase, 0.0)
                    return self._accept(model, phase, hit, 0.0)
            self._check_stop()
            estimate = await self._reserve(model, request)
            try:
                self._check_stop()
                completion = await backend.complete(request)
            except ProviderError as exc:
                return _Answer(None, None, 0.0, error=str(exc))
            else:
                cost = self._price(model, request, completion)
                if self.journal is not None:
                    await self._record(request, key, completion, phase, cost)
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

    def _maybe_journaled(self, key: str) -> bool:
        return self._journaled is None or digest_prefix(key) in self._journaled

    async def _record(self, request: Request, key: str, completion: Completion, phase: str, cost: float) -> None:
        """Write one answer to the journal; returns once it is committed (nothing uses an answer before).

        The run's :class:`~smartmix.journal_writer.BackgroundJournalWriter` commits every answer queued
        while it wrote the last batch in one transaction, off the event loop.
        """
        if self._journaled is not None:
            self._journaled.add(digest_prefix(key))
        await self._writer.commit(request, completion, phase, cost)

    def _accept(self, model: str, phase: str, completion: Completion, cost: float, paid: bool = False) -> _Answer:
        self.ledger.add(model, phase, cost)
        if paid or cost > 0:  # a free cache hit says nothing about what the next call will cost
            self._unit_cost.setdefault(model, []).append(cost)
        parsed = self.comparator.parse(completion.text)
        self._note_answer(model, completion.text, parsed)
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
        cost = spec.cost(inp, out, completion.cached_tokens)
        if completion.extra.get("batch"):  # answered by a provider batch job: the batch price
            cost *= batch_price_factor(spec)[0]
        return cost

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



def answer_warnings(
    seen: dict[str, list[int]], labels_seen: set[str], comparator: Comparator, final: bool
) -> list[str]:
    """Warnings about answers that cannot lead anywhere: all blank, none parseable, labels never given.

    ``seen``: per model, [answers, blank answers, answers the comparator could not read]; ``labels_seen``:
    the labels parsed so far; ``final``: profiling is over (the labels check waits for it).
    """
    out: list[str] = []
    n = sum(s[0] for s in seen.values())
    if n == 0:
        return out
    blank = sum(s[1] for s in seen.values())
    unparsed = sum(s[2] for s in seen.values())
    if blank == n:
        out.append(
            f"all {n} answers so far are blank: check max_tokens, the template and the endpoint; "
            "blank answers never agree with anything."
        )
    elif unparsed == n:
        out.append(
            f"none of the {n} answers so far could be read as an answer (labels: "
            f"{', '.join(getattr(comparator, 'labels', ()) or ['-'])}): check the labels and the prompt."
        )
    labels = getattr(comparator, "labels", None) if isinstance(comparator, LabelComparator) else None
    if final and labels and labels_seen and n >= 20:
        never = [label for label in labels if label not in labels_seen]
        if never:
            out.append(
                f"label(s) {', '.join(repr(x) for x in never)} never occurred in {n} answers: a typo in "
                "labels? Answers that match no label count as disagreeing."
            )
    return out


def reference_only_warning(plan: Plan, n_models: int, spent_on_candidates: float) -> str | None:
    """The warning when profiling found that only the reference meets the target, after paying the others."""
    reference = n_models - 1
    if n_models > 1 and not plan.chain and bool(np.all(plan.assignment == reference)) and spent_on_candidates > 0:
        return (
            "only the reference can meet this target on this data: every item is answered by the "
            f"reference, so the ${spent_on_candidates:.4f} spent on the other models bought nothing; a lower "
            "--target, or --method reference, would cost less."
        )
    return None


def reference_cost(plan: Plan, only_reference: bool, ledger: Ledger, reference: str, n_items: int) -> tuple[float, bool]:
    """What the reference alone would have cost, and whether that is measured: measured when it answered
    everything (``only_reference``, nothing profiled), else estimated from its mean cost per call in this run."""
    if not plan.profiled.any() and only_reference:
        return ledger.total, True
    spent = sum(c for (m, _), c in ledger.entries.items() if m == reference)
    calls = sum(k for (m, _), k in ledger.calls.items() if m == reference)
    if calls:
        return spent / calls * n_items, False
    return float("nan"), False


def costlier_warning(total: float, reference_cost: float) -> str | None:
    """The warning when a run cost more than the reference alone would have."""
    if math.isfinite(reference_cost) and reference_cost > 0 and total > reference_cost * (1 + 1e-9):
        return (
            f"this run cost ${total:.4f}, more than the reference alone (${reference_cost:.4f}): profiling "
            "did not pay for itself here; --method reference is cheaper for a job like this."
        )
    return None


def with_parse_counts(certificate: Certificate, comparator: Comparator, unparseable: dict[str, int]) -> Certificate:
    """The certificate with the comparator's name and, per model, how many answers it could not read
    (counted as disagreements); left as it is for the default comparator when every answer was read."""
    from smartmix.comparators import comparator_name

    name = comparator_name(comparator)
    counts = {m: k for m, k in unparseable.items() if k}
    if name == "exact" and not counts:  # nothing to add to the default
        return certificate
    details = {**certificate.details, "comparator": name, "unparseable": counts}
    return replace(certificate, details=details)


def run_sync(coro) -> Any:
    """Run a coroutine from synchronous code (the CLI and the Python API)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("smartmix.run() was called inside a running event loop; use 'await smartmix.arun(...)'")


__all__ = [
    "CallJournal", "Engine", "EngineOptions", "answer_warnings", "costlier_warning", "reference_cost", "reference_only_warning",
    "run_sync",
    "with_parse_counts",
]
