"""Trials: one batch per (setting, trial), every method and limit run on that same batch, over both cores.

A :class:`Cell` is one setting (suite, dataset, N, T, δ) with its method list and trial count. A task is
one (cell, trial, method): the worker draws the batch from the trial's seed (so every method of a trial
sees the same batch), runs the method with :func:`smartmix.core.offline.simulate` (peers with their
adapters) or computes the hindsight limits, and returns a compact result; the parent joins them into one
:class:`TrialRecord` per trial. A method that runs longer than the time limit is stopped and reported as
timed out. Recorded datasets reach each worker once, through the pool's initializer; tasks carry only the
cell, the trial number and the method.
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from smartmix.bench.data import (
    Batch,
    BenchData,
    adversarial_batch,
    bootstrap_batch,
    policy_seed,
    pool_batch,
    simulated_batch,
    trial_seed,
)
from smartmix.bench.limits import hindsight_costs
from smartmix.bench.peers import run_bargain

__all__ = ["Cell", "MethodResult", "TrialRecord", "TrialTimeout", "run_cells", "run_trial", "start_pool"]

LIMITS = ("lp-mix", "two-tier", "floor", "learned-mix", "learned-two-tier")
LIMITS_TASK = "limits"  # the task name of a trial's hindsight limits
DEFAULT_TIME_LIMIT = 60.0  # CPU seconds one method may take on one trial
LEARNED_LIMIT_TRIALS = 100  # the learned limits scan sample sizes: slow enough to price on the first trials only


@dataclass(frozen=True)
class Cell:
    """One setting. ``source`` says how batches are made:

    - ``("recorded", dataset)``: bootstrap of a recorded dataset to ``n`` items;
    - ``("adversarial", rates)``: synthetic pool with exact agreement counts (rates per candidate);
    - ``("simulated", profile)``: the SMART paper's simulator (``n`` is the profile's size);
    - ``("pool", n_models)``: a synthetic pool of real-priced models (:func:`smartmix.bench.data.pool_batch`).
    """

    suite: str
    dataset: str
    n: int
    target: float
    confidence: float
    methods: tuple[str, ...]
    trials: int
    source: tuple
    limits: bool = False
    method_trials: tuple[tuple[str, int], ...] = ()  # fewer trials for slow methods: (method, trials)
    label: str = ""  # extra description shown in reports (adversarial scenario)

    def trials_for(self, method: str) -> int:
        return min(self.trials, dict(self.method_trials).get(method, self.trials))

    def seed(self, base: int, trial: int) -> int:
        return trial_seed(base, self.suite, self.dataset, self.n, round(self.target, 6), self.label, trial)


@dataclass
class MethodResult:
    realised: float
    cost: float
    reference_cost: float
    profiling_cost: float
    shares: dict[str, float]
    wall_s: float
    timed_out: bool = False
    cpu_s: float = math.nan  # CPU time of this process during the run (load-independent, unlike wall_s)


class TrialTimeout(Exception):
    """A method ran past the per-trial time limit."""


def timed_out(wall_s: float) -> MethodResult:
    return MethodResult(math.nan, math.nan, math.nan, math.nan, {}, wall_s, timed_out=True)


class time_limit:
    """Raise :class:`TrialTimeout` in the block after ``seconds`` of CPU time of this process (SIGPROF, so a
    shared, loaded machine does not time out trials a quiet one finishes; main thread only, else no limit)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds if seconds and seconds > 0 else None
        self.armed = False

    def _fire(self, signum, frame):  # noqa: ANN001
        raise TrialTimeout

    def __enter__(self) -> time_limit:
        if self.seconds is not None and threading.current_thread() is threading.main_thread() and hasattr(
            signal, "setitimer"
        ):
            self.previous = signal.signal(signal.SIGPROF, self._fire)
            signal.setitimer(signal.ITIMER_PROF, self.seconds)
            self.armed = True
        return self

    def __exit__(self, *exc) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, self.previous)


@dataclass
class TrialRecord:
    cell: int
    trial: int
    seed: int
    methods: dict[str, MethodResult] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)  # cost of each hindsight limit
    reference_cost: float = 0.0
    wall_s: float = 0.0  # the whole trial: batch, every method, limits


# ---------------------------------------------------------------------------------------------------
# Worker side

_DATA: dict[str, BenchData] = {}


def _init_worker(data: dict[str, BenchData]) -> None:
    global _DATA
    _DATA = data
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Import the policies (and what they import lazily) now, so that a whole run uses the code as it was
    # when the pool started and the first trial's time is not an import's.
    import scipy.stats  # noqa: F401

    import smartmix.backends.simulated  # noqa: F401
    import smartmix.core.offline  # noqa: F401
    from smartmix.bench.peers import bargain_available

    bargain_available()


def start_pool(data: dict[str, BenchData], workers: int) -> ProcessPoolExecutor | None:
    """One pool for a whole run (None for ``workers <= 1``): every suite runs on the same code snapshot.

    spawn, not fork: the parent runs a progress-bar thread, and forking a threaded process is unsafe.
    """
    if workers <= 1:
        return None
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(data,))


def make_batch(cell: Cell, seed: int, data: dict[str, BenchData] | None = None) -> Batch:
    kind = cell.source[0]
    if kind == "recorded":
        store = _DATA if data is None else data
        return bootstrap_batch(store[cell.source[1]], cell.n, seed)
    if kind == "adversarial":
        return adversarial_batch(cell.n, cell.source[1], seed)
    if kind == "simulated":
        return simulated_batch(cell.source[1], seed, cell.n)
    if kind == "pool":
        return pool_batch(cell.n, seed, cell.source[1])
    raise ValueError(f"unknown batch source {cell.source!r}")


def simulate_extra(batch: Batch) -> dict:
    """Per-item confidence scores, for a simulate() that accepts them (``score=``)."""
    from smartmix.core.offline import simulate

    params = inspect.signature(simulate).parameters
    return {"score": batch.score} if "score" in params and batch.score is not None else {}


def proxy_column(batch: Batch) -> int | None:
    """BARGAIN's proxy: the cheapest candidate (column order) that has a score on some item, or None."""
    if batch.score is None:
        return None
    scored = np.flatnonzero(np.isfinite(batch.score[:, :-1]).any(axis=0))
    return int(scored[0]) if scored.size else None


def run_method(method: str, batch: Batch, cell: Cell, seed: int) -> MethodResult:
    from smartmix.core.offline import simulate
    from smartmix.policies import Guarantee

    start = time.perf_counter()
    seed = policy_seed(seed)  # the batch came from ``seed``; the method's own draws must not follow it
    if method == "bargain":
        proxy = proxy_column(batch)
        if proxy is None:
            raise ValueError("BARGAIN needs the proxy's confidence score; this batch has none")
        out = run_bargain(
            batch.agree[:, proxy],
            batch.score[:, proxy],
            batch.cost[:, proxy],
            batch.cost[:, -1],
            cell.target,
            cell.confidence,
            seed,
            names=(batch.models[proxy], batch.models[-1]),
        )
        return MethodResult(
            out.realised_agreement, out.cost, out.reference_cost, out.profiling_cost, out.shares,
            time.perf_counter() - start,
        )
    outcome = simulate(
        method,
        batch.agree,
        batch.cost,
        batch.models,
        Guarantee(cell.target, cell.confidence),
        seed=seed,
        **simulate_extra(batch),
    )
    return MethodResult(
        outcome.realised_agreement,
        outcome.cost,
        outcome.reference_cost,
        outcome.profiling_cost,
        dict(outcome.shares),
        time.perf_counter() - start,
    )


def run_task(
    cell: Cell, trial: int, method: str, base_seed: int, data: dict[str, BenchData] | None = None,
    limit_s: float | None = None,
) -> tuple[int, float, MethodResult | dict[str, float]]:
    """One method (or the limits, ``method == "limits"``) on one trial's batch: (seed, reference cost, result).

    A method past ``limit_s`` CPU seconds is stopped and returned as timed out; so are the limits (then empty).
    """
    seed = cell.seed(base_seed, trial)
    batch = make_batch(cell, seed, data)
    reference_cost = float(batch.cost[:, -1].sum())
    start = time.perf_counter()
    try:
        with time_limit(limit_s):
            if method == LIMITS_TASK:
                result: MethodResult | dict[str, float] = hindsight_costs(
                    batch.agree, batch.cost, batch.score, cell.target,
                    cell.confidence if trial < LEARNED_LIMIT_TRIALS else None,
                )
            else:
                cpu = time.process_time()
                result = run_method(method, batch, cell, seed)
                result.cpu_s = time.process_time() - cpu
    except TrialTimeout:
        result = {} if method == LIMITS_TASK else timed_out(time.perf_counter() - start)
    return seed, reference_cost, result


def tasks_of(cell: Cell) -> list[tuple[int, str]]:
    """(trial, method) pairs of a cell: each method on its trials, then the limits where the cell has them."""
    out = [(t, m) for m in cell.methods for t in range(cell.trials_for(m))]
    if cell.limits:
        out += [(t, LIMITS_TASK) for t in range(cell.trials)]
    return out


def run_trial(
    cell: Cell, cell_index: int, trial: int, base_seed: int, data: dict[str, BenchData] | None = None,
    limit_s: float | None = None,
) -> TrialRecord:
    """Every method (and the limits) of one trial, in this process."""
    start = time.perf_counter()
    record = TrialRecord(cell_index, trial, cell.seed(base_seed, trial))
    names = [m for m in cell.methods if trial < cell.trials_for(m)] + ([LIMITS_TASK] if cell.limits else [])
    for method in names:
        _, record.reference_cost, result = run_task(cell, trial, method, base_seed, data, limit_s)
        _store(record, method, result)
    record.wall_s = time.perf_counter() - start
    return record


def _store(record: TrialRecord, method: str, result: MethodResult | dict[str, float]) -> None:
    if method == LIMITS_TASK:
        assert isinstance(result, dict)
        record.limits.update(result)
    else:
        assert isinstance(result, MethodResult)
        record.methods[method] = result
        record.wall_s += result.wall_s


def _task(args: tuple[Cell, int, int, str, int, float | None]):
    cell, cell_index, trial, method, base_seed, limit_s = args
    start = time.perf_counter()
    seed, reference_cost, result = run_task(cell, trial, method, base_seed, limit_s=limit_s)
    return cell_index, trial, method, seed, reference_cost, result, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------
# Parent side


def run_cells(
    cells: list[Cell],
    data: dict[str, BenchData],
    base_seed: int,
    workers: int = 2,
    progress: Callable[[str, int], None] | None = None,
    pool: ProcessPoolExecutor | None = None,
    limit_s: float | None = DEFAULT_TIME_LIMIT,
) -> list[list[TrialRecord]]:
    """Run every (trial, method) of every cell; returns records per cell, in trial order (independent of
    scheduling). ``progress(method, 1)`` is called as each method finishes a trial ("limits" for the limits).

    ``pool``: a pool from :func:`start_pool` (its workers must hold ``data``); otherwise one is started here.
    """
    tasks = [(cell, ci, t, m, base_seed, limit_s) for ci, cell in enumerate(cells) for t, m in tasks_of(cell)]
    # Largest batches first keeps both cores busy to the end.
    tasks.sort(key=lambda a: -a[0].n)
    records = [[TrialRecord(ci, t, cell.seed(base_seed, t)) for t in range(cell.trials)] for ci, cell in enumerate(cells)]

    stopped: set[tuple[int, str]] = set()  # (cell, method) that timed out: their other trials are not run

    def collect(out) -> None:
        ci, trial, method, _seed, reference_cost, result, wall = out
        record = records[ci][trial]
        if not math.isnan(reference_cost):
            record.reference_cost = reference_cost
        _store(record, method, result)
        if method == LIMITS_TASK:
            record.wall_s += wall
        elif result.timed_out:
            stopped.add((ci, method))
        if progress:
            progress(method, 1)

    def skip(args) -> None:
        cell, ci, trial, method, seed, _ = args
        collect((ci, trial, method, cell.seed(seed, trial), math.nan, timed_out(math.nan), 0.0))

    if pool is None and workers <= 1:
        _init_worker(data)
        for args in tasks:
            if (args[1], args[3]) in stopped:
                skip(args)
            else:
                collect(_task(args))
    else:
        own = pool is None
        executor = start_pool(data, workers) if own else pool
        try:
            futures = {executor.submit(_task, args): args for args in tasks}
            for fut in as_completed(futures):
                if fut.cancelled():
                    skip(futures[fut])
                    continue
                out = fut.result()
                collect(out)
                if (out[0], out[2]) in stopped:
                    for other, args in futures.items():
                        if (args[1], args[3]) == (out[0], out[2]):
                            other.cancel()
        finally:
            if own:
                executor.shutdown(cancel_futures=True)
    return records


def quantile(values: Iterable[float], q: float) -> float:
    arr = np.asarray(list(values), dtype=float)
    return float(np.quantile(arr, q)) if arr.size else math.nan
