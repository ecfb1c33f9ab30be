"""Trials: one batch per (setting, trial), every method and limit run on that same batch, over both cores.

A :class:`Cell` is one setting (suite, dataset, N, T, δ) with its method list and trial count. A task is
one (cell, trial): the worker draws the batch from the trial's seed, runs each method with
:func:`smartmix.core.offline.simulate` (peers with their adapters), computes the hindsight limits, and returns
a compact :class:`TrialRecord`. Recorded datasets reach each worker once, through the pool's initializer;
tasks carry only the cell and the trial number.
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import os
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
    simulated_batch,
    trial_seed,
)
from smartmix.bench.limits import hindsight_costs
from smartmix.bench.peers import run_bargain

__all__ = ["Cell", "MethodResult", "TrialRecord", "run_cells", "run_trial", "start_pool"]

LIMITS = ("lp-mix", "two-tier", "floor", "learned-mix", "learned-two-tier")
LEARNED_LIMIT_TRIALS = 100  # the learned limits scan sample sizes: slow enough to price on the first trials only


@dataclass(frozen=True)
class Cell:
    """One setting. ``source`` says how batches are made:

    - ``("recorded", dataset)``: bootstrap of a recorded dataset to ``n`` items;
    - ``("adversarial", rates)``: synthetic pool with exact agreement counts (rates per candidate);
    - ``("simulated", profile)``: the SMART paper's simulator (``n`` is the profile's size).
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
    # Import the policies now, so that a whole run uses the code as it was when the pool started.
    import smartmix.backends.simulated  # noqa: F401
    import smartmix.core.offline  # noqa: F401


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
    raise ValueError(f"unknown batch source {cell.source!r}")


def simulate_extra(batch: Batch) -> dict:
    """Per-item confidence scores, for a simulate() that accepts them (``score=``)."""
    from smartmix.core.offline import simulate

    params = inspect.signature(simulate).parameters
    return {"score": batch.score} if "score" in params and batch.score is not None else {}


def run_method(method: str, batch: Batch, cell: Cell, seed: int) -> MethodResult:
    from smartmix.core.offline import simulate
    from smartmix.policies import Guarantee

    start = time.perf_counter()
    if method == "bargain":
        if batch.score is None:
            raise ValueError("BARGAIN needs the proxy's confidence score; this batch has none")
        out = run_bargain(
            batch.agree[:, 0],
            batch.score[:, 0],
            batch.cost[:, 0],
            batch.cost[:, -1],
            cell.target,
            cell.confidence,
            seed,
            names=(batch.models[0], batch.models[-1]),
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


def run_trial(cell: Cell, cell_index: int, trial: int, base_seed: int, data: dict[str, BenchData] | None = None) -> TrialRecord:
    start = time.perf_counter()
    seed = cell.seed(base_seed, trial)
    batch = make_batch(cell, seed, data)
    record = TrialRecord(cell_index, trial, seed, reference_cost=float(batch.cost[:, -1].sum()))
    for method in cell.methods:
        if trial >= cell.trials_for(method):
            continue
        record.methods[method] = run_method(method, batch, cell, seed)
    if cell.limits:
        record.limits.update(
            hindsight_costs(
                batch.agree, batch.cost, batch.score, cell.target,
                cell.confidence if trial < LEARNED_LIMIT_TRIALS else None,
            )
        )
    record.wall_s = time.perf_counter() - start
    return record


def _task(args: tuple[Cell, int, int, int]) -> TrialRecord:
    cell, cell_index, trial, base_seed = args
    return run_trial(cell, cell_index, trial, base_seed)


# ---------------------------------------------------------------------------------------------------
# Parent side


def run_cells(
    cells: list[Cell],
    data: dict[str, BenchData],
    base_seed: int,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
    pool: ProcessPoolExecutor | None = None,
) -> list[list[TrialRecord]]:
    """Run every trial of every cell; returns records per cell, in trial order (independent of scheduling).

    ``pool``: a pool from :func:`start_pool` (its workers must hold ``data``); otherwise one is started here.
    """
    tasks = [(cell, ci, t, base_seed) for ci, cell in enumerate(cells) for t in range(cell.trials)]
    # Longest tasks first keeps both cores busy to the end.
    tasks.sort(key=lambda a: -a[0].n * max(1, len(a[0].methods)))
    results: list[list[TrialRecord | None]] = [[None] * cell.trials for cell in cells]
    if pool is None and workers <= 1:
        _init_worker(data)
        for args in tasks:
            rec = _task(args)
            results[rec.cell][rec.trial] = rec
            if progress:
                progress(1)
    else:
        own = pool is None
        executor = start_pool(data, workers) if own else pool
        try:
            futures = [executor.submit(_task, args) for args in tasks]
            for fut in as_completed(futures):
                rec = fut.result()
                results[rec.cell][rec.trial] = rec
                if progress:
                    progress(1)
        finally:
            if own:
                executor.shutdown(cancel_futures=True)
    return [[r for r in per if r is not None] for per in results]


def quantile(values: Iterable[float], q: float) -> float:
    arr = np.asarray(list(values), dtype=float)
    return float(np.quantile(arr, q)) if arr.size else math.nan
