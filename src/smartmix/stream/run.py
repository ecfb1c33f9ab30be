"""Streamed runs: replays of recorded outputs and simulations, on the one driver, at a few bytes per item.

A replay is read once into columns (:mod:`smartmix.stream.columns`), run by the core's driver over a
:class:`~smartmix.stream.source.StreamSource` (the offline source with the engine's books), and its answers
are written by a second pass over the file (:mod:`smartmix.stream.output`). Plans, per-item models,
answers, costs and certificates are those of the live engine replaying the same file (tests/test_streaming.py).

Replayed calls cost nothing and are read from a file that already holds them, so a streamed run journals
no call: with a run directory it registers the run (lock, settings, how it ended) and writes its outputs
there; running it again recomputes it from the file (same seed, same answers, nothing paid).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smartmix.core.driver import Execution, execute, run_inline
from smartmix.engine import EngineOptions, costlier_warning, reference_cost, with_parse_counts
from smartmix.errors import ConfigError, PriceError, UnknownModelError
from smartmix.models import Pool
from smartmix.policies import BatchSpec, Guarantee, make_policy
from smartmix.result import RunResult
from smartmix.scores import score_from_logprob
from smartmix.stream.columns import CHUNK, load_columns
from smartmix.stream.output import RecordedRows, SimulatedRows, StreamedItems, StreamedResult
from smartmix.stream.source import AnswerFlags, StreamSource
from smartmix.tasks import Comparator

__all__ = ["check_streamable", "in_run_directory", "replay", "simulate_streamed", "why_not_streamed"]

ProgressCallback = Callable[[dict[str, Any]], None]
MessageCallback = Callable[[str], None]


def why_not_streamed(
    *, data: Any, simulated: str | None, config: Any, job: Any, journal: Any, scores: str | None, method: str,
    mode: str | None, max_cost: float | None, router: Any = None,
) -> str | None:
    """Why this run cannot be streamed (None: it can). Streaming covers replays of a recorded-outputs file
    and simulations, in the synchronous mode, without a cost cap, scores from virtual models or the router."""
    from smartmix.api import is_recorded_outputs

    if job is not None or config is not None:
        return "it calls real models (a job file or a ready job)"
    if simulated is None and not (isinstance(data, str | Path) and is_recorded_outputs(data)):
        return "its data is not a recorded-outputs file"
    reasons = {
        "a journal object was given": journal is not None,
        "--scores makes virtual models that call others": bool(scores),
        "the router's predictor reads each prompt": method == "router" or router is not None,
        f"--mode {mode} sends calls through a bulk channel": mode not in (None, "sync"),
        "--max-cost stops between calls": max_cost is not None,
    }
    return next((why for why, applies in reasons.items() if applies), None)


def replay(
    path: str | Path, *, comparator: Comparator, guarantee: Guarantee, method: str, seed: int,
    options: EngineOptions, reference: str | None = None, models: Sequence[str] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None, calibration: str | Path | None = None,
    progress: ProgressCallback | None = None, on_warning: MessageCallback | None = None, chunk: int = CHUNK,
    run: Callable[[Pool], Any] | None = None,
) -> StreamedResult:
    """Run ``method`` on a recorded-outputs file, streamed (see the module doc).

    ``run(pool)``, when given, is entered as a context manager once the pool is known and before the driver
    runs (the run directory's lifecycle); it may set ``run_id`` and ``status`` on what it yields.
    """
    path = Path(path)
    books = _Books(progress, on_warning)
    columns = load_columns(path, comparator, [reference] if reference else None, chunk=chunk, progress=books.report)
    from smartmix.api import select_models
    from smartmix.backends.replay import default_reference, recorded_pool

    means = columns.mean_cost()
    reference = reference or default_reference(columns.models, means)
    for name in [reference, *(models or ())]:
        if name not in columns.models:
            raise UnknownModelError(
                f"model '{name}' is not in the recorded outputs {path}; recorded models: {', '.join(columns.models)}"
            )
    pool = select_models(recorded_pool(means, reference, prices), models)
    cols = [columns.column(m) for m in pool.names]
    for name in pool.names:
        columns.require_complete(name)
    unpriced = [s.name for s in pool.models if not s.priced and np.isnan(columns.cost[:, columns.column(s.name)]).any()]
    if unpriced:
        raise PriceError(
            f"{path} has no recorded cost for {', '.join(unpriced)} and no price is known; give one with "
            f"--price {unpriced[0]}=IN/OUT (USD per million tokens)"
        )
    cost = columns.cost[:, cols]
    rows, col, n_in, n_out = columns.usage
    for p, c in enumerate(cols):  # calls without a recorded cost: priced like the replay backend prices them
        mine = col == c
        spec = pool.spec(pool.names[p])
        for r, a, b in zip(rows[mine].tolist(), n_in[mine].tolist(), n_out[mine].tolist(), strict=True):
            cost[r, p] = spec.cost(a, b)
    score = score_from_logprob(columns.confidence[:, cols])
    agree = columns.agree[columns.column(reference)][:, cols]
    flags = AnswerFlags(
        columns.blank[:, cols], columns.unparsed[:, cols],
        None if columns.label is None else columns.label[:, cols], columns.labels,
    )
    columns.release()  # what the writer needs stays: the path and the file's fingerprint
    options = _calibrated(options, calibration, pool, comparator)
    source = books.source = StreamSource(
        agree, cost, score, tuple(pool.names), flags, comparator, chunk=chunk, progress=books.report, warn=books.warn,
    )
    with _entered(run, pool) as opened:
        execution = _execute(method, guarantee, seed, options, source)
        rows_out = RecordedRows(pool.names, execution.final, execution.spent, execution.plan.profiled, chunk,
                                books.report, columns=columns, comparator=comparator)
        result = books.result(execution, source, rows_out, comparator, method, seed)
        if opened is not None:
            opened(result)
    return result


def simulate_streamed(
    profile: str, *, guarantee: Guarantee, method: str, seed: int, options: EngineOptions, n_items: int | None = None,
    calibration: str | Path | None = None, progress: ProgressCallback | None = None,
    on_warning: MessageCallback | None = None, chunk: int = CHUNK, run: Callable[[Pool], Any] | None = None,
) -> StreamedResult:
    """The SMART paper's simulated setting (``--simulated``), streamed: the simulated backend's agreement and
    prices drawn a chunk at a time, nothing per item but the arrays."""
    from smartmix.backends.simulated import PAPER_PROFILES, simulated_answer
    from smartmix.tasks import ExactComparator

    if profile not in PAPER_PROFILES:
        raise ConfigError(f"unknown simulated profile '{profile}'; choose one of: {', '.join(PAPER_PROFILES)}")
    spec = PAPER_PROFILES[profile]
    pool = spec.pool()
    n = spec.n_items if n_items is None else n_items
    if n < 1:
        raise ConfigError(f"n_items must be at least 1, got {n}")
    order = [next(k for k, m in enumerate(spec.models) if m.name == name) for name in pool.names]
    rates = np.array([m.agreement for m in spec.models])
    rng = np.random.default_rng(seed)
    agree = np.empty((n, len(order)), dtype=bool)
    ref = order[-1]
    for start in range(0, n, chunk):  # the same draws as simulated_arrays, a chunk at a time
        block = rng.random((min(chunk, n - start), len(rates))) < rates
        block[:, ref] = True
        agree[start : start + len(block)] = block[:, order]
    unit = np.array([pool.spec(m.name).cost(round(m.prompt_tokens), round(m.completion_tokens), None)
                     for m in (spec.models[k] for k in order)])
    cost = np.broadcast_to(unit, agree.shape)
    score = np.broadcast_to(np.float64(np.nan), agree.shape)
    flags = AnswerFlags(np.broadcast_to(False, agree.shape), np.broadcast_to(False, agree.shape))
    books = _Books(progress, on_warning)
    comparator = ExactComparator()
    options = _calibrated(options, calibration, pool, comparator)
    source = books.source = StreamSource(
        agree, cost, score, tuple(pool.names), flags, comparator, chunk=chunk, progress=books.report, warn=books.warn,
    )
    with _entered(run, pool) as opened:
        execution = _execute(method, guarantee, seed, options, source)
        agrees = agree[np.arange(n), execution.final]
        rows_out = SimulatedRows(pool.names, execution.final, execution.spent, execution.plan.profiled, chunk,
                                 books.report, prefix=f"{spec.name}-", seed=seed, n_labels=spec.n_labels, agrees=agrees,
                                 answer=simulated_answer)
        result = books.result(execution, source, rows_out, comparator, method, seed)
        if opened is not None:
            opened(result)
    return result


def _calibrated(options: EngineOptions, calibration: str | Path | None, pool: Pool, comparator: Comparator) -> EngineOptions:
    """The options with the calibration file's past outputs (as the engine's run loads them)."""
    if calibration is None:
        return options
    from dataclasses import replace

    from smartmix.calibration import load_calibration

    return replace(options, calibration=load_calibration(calibration, pool.names, comparator))


def _execute(method: str, guarantee: Guarantee, seed: int, options: EngineOptions, source: StreamSource) -> Execution:
    spec = BatchSpec(
        len(source.agree), source.models, guarantee, seed=seed, batch_size=options.batch_size,
        options=tuple(sorted(options.method_options.items())), calibration=options.calibration,
    )
    return run_inline(execute(make_policy(method, spec), source))


class _entered:
    """``run(pool)`` entered as a context manager (or nothing when there is no run directory)."""

    def __init__(self, run: Callable[[Pool], Any] | None, pool: Pool):
        self._cm = None if run is None else run(pool)

    def __enter__(self) -> Any:
        return None if self._cm is None else self._cm.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return None if self._cm is None else self._cm.__exit__(*exc)


class _Books:
    """Progress and warnings of one streamed run, as the engine reports them."""

    def __init__(self, progress: ProgressCallback | None, on_warning: MessageCallback | None):
        self.progress = progress
        self.on_warning = on_warning
        self.warnings: list[str] = []
        self.source: StreamSource | None = None

    def report(self, phase: str, done: int, total: int | None) -> None:
        if self.progress is not None:
            spent = 0.0 if self.source is None else self.source.ledger.total
            self.progress({"phase": phase, "done": done, "total": total, "spent": spent})

    def warn(self, message: str) -> None:
        if message in self.warnings:
            return
        self.warnings.append(message)
        if self.on_warning is not None:
            self.on_warning(message)

    def result(
        self, execution: Execution, source: StreamSource, rows: Any, comparator: Comparator, method: str, seed: int,
    ) -> StreamedResult:
        reference = source.models[-1]
        n = len(execution.final)
        only_reference = bool(np.all(execution.final == len(source.models) - 1))
        ref_cost, measured = reference_cost(execution.plan, only_reference, source.ledger, reference, n)
        message = costlier_warning(source.ledger.total, ref_cost)
        if message is not None:
            self.warn(message)
        result = StreamedResult(
            items=StreamedItems(rows),  # type: ignore[arg-type]
            certificate=with_parse_counts(execution.certificate, comparator, source.unparseable),
            ledger=source.ledger, reference_cost=ref_cost, reference_cost_measured=measured, method=method,
            seed=seed, warnings=self.warnings,
        )
        result.execution = execution
        return result


def check_streamable(reason: str | None, stream: bool | None) -> bool:
    """Whether to stream: automatically when possible; ``stream=True`` insists (an error saying why not)."""
    if stream is False:
        return False
    if reason is not None and stream:
        raise ConfigError(f"this run cannot be streamed: {reason}; drop --stream to run it on the engine")
    return reason is None


def in_run_directory(
    directory: Any, settings: Callable[[Pool], dict[str, Any]], seed: int, on_event: MessageCallback | None
) -> Callable[[Pool], Any]:
    """A streamed run's life in a run directory (``run=`` of :func:`replay`): lock and register the run once the
    pool is known, then write its answers and certificate there and record how it ended."""
    import contextlib

    from smartmix.report import certificate_dict
    from smartmix.runs import open_run, status_for, write_run_outputs

    @contextlib.contextmanager
    def lifecycle(pool: Pool):
        with open_run(directory, settings(pool), seed) as opened:
            if on_event is not None:
                again = " again" if opened.resumed else ""
                on_event(f"Run {opened.run_id}{again} (streamed: recomputed from the data, nothing paid or journaled; "
                         f"outputs in {directory.root / opened.run_id}).")

            def finish(result: RunResult) -> None:
                result.run_id = opened.run_id
                opened.status = status_for(None, len(result.failures))
                result.outputs = write_run_outputs(opened, result, certificate_dict)

            yield finish

    return lifecycle
