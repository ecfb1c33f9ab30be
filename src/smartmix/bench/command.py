"""``smartmix bench``: every method, peer and hindsight limit on the same batches; CSV, Markdown and PNG reports.

Registered by the CLI as ``app.command("bench")(bench)``; ``benchmarks/run_all.py`` runs it standalone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from smartmix.errors import ConfigError

__all__ = ["bench", "run_bench", "default_methods", "known_methods"]

SCORE_NOTES = {
    "recorded": "Scores (--scores recorded): exp of each model's recorded confidence (a log-probability).",
    "none": "Scores (--scores none): none — the recorded confidence removed, as for providers without logprobs. "
    "Two-tier limits are undefined (n/a) and score-based methods see no score.",
    "consistency": "Scores (--scores consistency): the recorded confidence removed, and virtual candidates "
    "\"A|B\" (A's answer, A's + B's cost, score 1 when B agrees with A) from "
    "smartmix.scores.consistency_candidates: the score available without logprobs. BARGAIN's proxy is then the "
    "cheapest candidate with a score (a virtual one).",
}

DEFAULT_N = 50_000
QUICK_N = 10_000
DEFAULT_TARGETS = "0.8,0.9,0.95"
QUICK_DATASETS = 2


def known_methods() -> list[str]:
    """Every method the bench can run: the policy registry (read now, so later plug-ins count) and peers."""
    from smartmix.bench.peers import PEERS
    from smartmix.policies import Policy

    return [*Policy.registry, *PEERS]


def default_methods() -> list[str]:
    """Every registered policy except ``reference`` (the yardstick itself) and those the bench can't build
    (they need options such as a trained predictor), then the peers that are installed."""
    from smartmix.bench.peers import PEERS, bargain_available
    from smartmix.bench.suites import unavailable
    from smartmix.policies import Policy

    peers = [p for p in PEERS if p != "bargain" or bargain_available()]
    return [m for m in Policy.registry if m != "reference" and unavailable(m) is None] + peers


def skipped_methods() -> dict[str, str]:
    """Registered policies left out of the default list, with the reason."""
    from smartmix.bench.suites import unavailable
    from smartmix.policies import Policy

    return {m: why for m in Policy.registry if m != "reference" and (why := unavailable(m)) is not None}


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--{what} takes comma-separated numbers, got '{text}'") from None
    if not values:
        raise ConfigError(f"--{what} needs at least one value")
    return values


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(float(part)) for part in text.replace("_", "").split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--{what} takes comma-separated whole numbers, got '{text}'") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--{what} needs positive whole numbers, got '{text}'")
    return values


def _suites(text: str) -> list[str]:
    from smartmix.bench.suites import ALL_SUITES, SUITES

    names = [s.strip() for s in text.split(",") if s.strip()]
    if "all" in names:
        names = [*ALL_SUITES, *(n for n in names if n != "all")]
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise ConfigError(f"unknown suite '{', '.join(unknown) or text}'; choose all or any of {', '.join(SUITES)}")
    return [s for s in SUITES if s in names]


def _paths(values: Sequence[str] | None) -> list[Path] | None:
    """``--data`` values: each may hold several paths separated by commas or spaces."""
    if not values:
        return None
    paths = [Path(part) for v in values for part in v.replace(",", " ").split() if part]
    return paths or None


def _methods(text: str | None) -> list[str]:
    if text is None:
        return default_methods()
    names = [m.strip() for m in text.split(",") if m.strip()]
    known = known_methods()
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise ConfigError(f"unknown method '{', '.join(unknown) or text}'; choose from {', '.join(known)}")
    from smartmix.bench.suites import unavailable

    for m in names:
        if (why := unavailable(m)) is not None:
            raise ConfigError(f"method '{m}' can't run in the bench: {why}")
    if "bargain" in names:
        from smartmix.bench.peers import bargain_available
        from smartmix.errors import MissingExtraError

        if not bargain_available():
            raise MissingExtraError("The BARGAIN peer", "bench", "bargain==0.1.3")
    return list(dict.fromkeys(names))


def code_version() -> str:
    """The commit the code comes from, plus a mark when ``src`` has uncommitted changes; "unknown" outside git.

    Read-only: ``--no-optional-locks`` keeps git from refreshing the index.
    """
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=Path(__file__).parent, capture_output=True, text=True,
            timeout=10, check=False,
        )
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "../..")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return commit + (" + uncommitted changes" if changed else "")


def command_line(given: dict[str, object]) -> str:
    """The command that reruns this benchmark (the options given, in a fixed order)."""
    parts = ["smartmix bench"]
    for name, value in given.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list | tuple):
            parts.append(f"{flag} {' '.join(str(v) for v in value)}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def run_bench(
    *,
    data: Sequence[Path] | None = None,
    n: Sequence[int] | None = None,
    targets: Sequence[float] = (0.8, 0.9, 0.95),
    confidence: float = 0.95,
    methods: Sequence[str] | None = None,
    trials: int | None = None,
    seed: int = 0,
    quick: bool = False,
    suites: Sequence[str] = ("datasets", "adversarial", "paper", "overheads"),
    out: Path = Path("benchmarks/results"),
    workers: int = 2,
    command: str = "smartmix bench",
    console: Console | None = None,
    progress: bool = True,
    reference: str | None = None,
    scores: str = "recorded",
    time_limit: float | None = None,
    echo: Callable[[str], None] = print,
    compare: str | None = None,
) -> dict[str, list]:
    """Run the suites and write their reports under ``out``; returns the rows of each suite.

    ``reference``: the model the recorded datasets are compared with (default: each file's priciest);
    ``scores``: ``recorded``, ``none`` or ``consistency`` (:func:`smartmix.bench.data.load_dataset`);
    ``time_limit``: CPU seconds one method may take on one trial before it is stopped and reported as timed
    out (default :data:`smartmix.bench.trials.DEFAULT_TIME_LIMIT`). ``echo`` prints the summaries."""
    from smartmix.bench import report
    from smartmix.bench import suites as suite_defs
    from smartmix.bench.data import default_data_paths, find_data_files, load_dataset
    from smartmix.bench.summary import misses as find_misses
    from smartmix.bench.summary import summarise
    from smartmix.bench.trials import run_cells

    console = console or Console(stderr=True)
    unknown = [s for s in suites if s not in suite_defs.SUITES]
    if unknown:
        raise ConfigError(f"unknown suite '{', '.join(unknown)}'; choose any of {', '.join(suite_defs.SUITES)}")
    for t in targets:
        if not 0 < t <= 1:
            raise ConfigError(f"--targets must lie in (0, 1], got {t}")
    if not 0 < confidence < 1:
        raise ConfigError(f"--confidence must lie in (0, 1), got {confidence}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    from smartmix.bench.data import SCORES
    from smartmix.bench.trials import DEFAULT_TIME_LIMIT

    if scores not in SCORES:
        raise ConfigError(f"--scores must be one of {', '.join(SCORES)}, got '{scores}'")
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"--time-limit must be a positive number of seconds, got {time_limit}")
    limit_s = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    methods = list(methods) if methods is not None else default_methods()
    ns = list(n) if n else [QUICK_N if quick else DEFAULT_N]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list] = {}

    datasets = []
    if "datasets" in suites or "small" in suites:
        explicit = bool(data)
        files = find_data_files(list(data)) if data else default_data_paths()
        if quick and not explicit:
            files = files[:QUICK_DATASETS]
        seen: set[str] = set()
        from smartmix.comparators import make_comparator

        comparator = make_comparator(compare) if compare else None
        for f in files:
            ds = load_dataset(f, reference=reference, scores=scores, comparator=comparator)
            if ds.name in seen:
                ds = load_dataset(f, name=f"{ds.name}#{len(seen)}", reference=reference, scores=scores, comparator=comparator)
            seen.add(ds.name)
            datasets.append(ds)

    def notes_for(suite: str) -> list[str]:
        notes = []
        left_out = {m: why for m, why in skipped_methods().items() if m not in methods}
        if left_out and suite != "overheads":
            notes.append(
                "Not run: " + "; ".join(f"{m} ({why})" for m, why in left_out.items())
                + ". The router has its own evaluation: smartmix bench --suite router."
            )
        if suite in ("datasets", "small"):
            if "bargain" not in methods:
                notes.append("BARGAIN not run (not installed or not selected).")
            elif scores == "none":
                notes.append("BARGAIN: n/a (it needs a proxy score, and this run has none: --scores none).")
            else:
                notes.append(
                    "BARGAIN (bargain==0.1.3, BARGAIN_A with default settings): proxy = the cheapest candidate "
                    "that has a score, with that score (below); oracle = the reference; δ = 1 − confidence; charged "
                    "the proxy on every item plus the reference on every item it sends to the oracle. See benchmarks/README.md."
                )
            notes.append(SCORE_NOTES[scores])
            notes.append(
                "Reference: " + (reference if reference else "the priciest model of each file (mean recorded cost)")
                + ". Datasets: "
                + ", ".join(f"{d.name} ({d.n_items:,} items: {', '.join(d.models)})" for d in datasets)
            )
        if suite == "pool":
            from smartmix.bench.data import (
                MAX_POOL,
                POOL_CORRELATION,
                POOL_RATES,
                POOL_TOKENS,
                pool_models,
                pool_prices,
            )

            models = pool_models(MAX_POOL)
            prices = pool_prices(models)
            notes.append(
                "Pools: the 12-model pool is " + ", ".join(pool_models(12)) + "; the 20-model pool adds "
                + ", ".join(m for m in models if m not in pool_models(12)) + ". Prices: "
                + ", ".join(f"{m} ${p[0] * 1e6:g}/${p[1] * 1e6:g}" for m, p in zip(models, prices, strict=True))
                + " — USD per million input/output tokens from genai-prices' bundled snapshot; claude-sonnet-4-0 "
                f"is the reference. Per item: log-normal token counts around {POOL_TOKENS[0]:g} in / {POOL_TOKENS[1]:g} out; "
                f"candidate agreement from {POOL_RATES[0]:g} (cheapest) to {POOL_RATES[1]:g} (dearest), correlated "
                f"through a shared item difficulty (weight {POOL_CORRELATION:g}); synthetic scores as in the "
                "adversarial suite."
            )
        if suite != "overheads":
            notes.append(
                f"Time limit: {limit_s:g} s of CPU per method and trial; a method past it is stopped, counted under "
                "`timed_out`, and its remaining trials in that setting are not run."
            )
        if suite == "adversarial":
            notes.append(
                "Every candidate also gets a synthetic confidence score, sigmoid(±1 + N(0, 1)) (+ where it agrees), "
                "so score-based methods (cascade, margin, BARGAIN with that score) run on the same pools."
            )
        if suite == "paper":
            skipped = [m for m in methods if suite_defs.needs_scores(m)]
            if skipped:
                notes.append(
                    f"Not run here: {', '.join(skipped)} (they need per-item confidence scores; the paper's "
                    "simulator has none)."
                )
        return notes

    from smartmix.bench.trials import start_pool

    version = code_version()
    # One pool for the whole run: every suite runs on the code as it was when the run started.
    pool = start_pool({d.name: d for d in datasets}, workers) if any(s not in ("overheads", "router") for s in suites) else None

    def run_suite(suite: str) -> None:
        start = time.perf_counter()
        if suite == "router":
            from smartmix.bench.router_eval import run_router_suite

            run_router_suite(out / "router", data, command, version, quick=quick, echo=echo)
            results[suite] = []
            return
        if suite == "overheads":
            n_over = suite_defs.QUICK_OVERHEAD_N if quick else suite_defs.OVERHEAD_N
            rows = suite_defs.measure_policy_overhead(methods, n_over, (0.9, 0.95, 0.98), confidence)
            rows += suite_defs.measure_solve_mix(repeats=50 if quick else 200, seed=seed)
            info = report.RunInfo(
                command, time.perf_counter() - start, 1, seed,
                f"one run per method and target on a {n_over:,}-item batch; solve_mix on "
                f"{rows[-1].repeats} random instances per size",
                code=version,
            )
            report.write_overheads(rows, info, out)
            results[suite] = rows
            echo(f"== overheads: {time.perf_counter() - start:.0f} s. Full tables: {out / 'overheads.md'}")
            for r in rows:
                echo(f"{r.what:<10} {r.name:<12} {r.setting[:28]:<28} {r.median_ms:>10.2f} ms"
                     + ("" if math.isnan(r.us_per_item) else f" {r.us_per_item:>8.3f} µs/item"))
            return
        if suite == "datasets":
            cells = suite_defs.datasets_cells(datasets, ns, targets, confidence, methods, quick, trials)
        elif suite == "small":
            cells = suite_defs.small_cells(datasets, list(n) if n else None, targets, confidence, methods, quick, trials)
        elif suite == "pool":
            cells = suite_defs.pool_cells(list(n) if n else None, targets, confidence, methods, quick, trials)
        elif suite == "adversarial":
            adv_n = list(n) if n else list(suite_defs.QUICK_ADVERSARIAL_N if quick else suite_defs.ADVERSARIAL_N)
            cells = suite_defs.adversarial_cells(adv_n, targets, confidence, methods, quick, trials)
        else:
            paper_targets = suite_defs.QUICK_PAPER_TARGETS if quick else suite_defs.PAPER_TARGETS
            cells = suite_defs.paper_cells(paper_targets, confidence, methods, quick, trials)
        cells = [c for c in cells if c.methods]
        if not cells:
            console.print(f"[yellow]{suite}: no method to run (the selected methods need a confidence signal)[/]")
            return
        from smartmix.bench.trials import LIMITS_TASK, tasks_of

        per_method: dict[str, int] = {}
        for c in cells:
            for _, m in tasks_of(c):
                per_method[m] = per_method.get(m, 0) + 1
        data_map = {d.name: d for d in datasets} if suite in ("datasets", "small") else {}
        with Progress(
            TextColumn(f"{suite:<11}"), TextColumn("{task.description:<16}"), BarColumn(bar_width=20),
            MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=not progress,
        ) as bar:
            bars = {
                m: bar.add_task(m if m != LIMITS_TASK else "hindsight limits", total=k) for m, k in per_method.items()
            }
            records = run_cells(
                cells, data_map, seed, workers, lambda m, k: bar.advance(bars[m], k), pool=pool, limit_s=limit_s,
            )
        wall = time.perf_counter() - start
        rows, miss = [], []
        for cell, recs in zip(cells, records, strict=True):
            models = list(data_map[cell.dataset].models) if cell.dataset in data_map else None
            rows += summarise(cell, recs, models)
            miss += find_misses(cell, recs)
        busy = sum(r.wall_s for recs in records for r in recs)
        info = report.RunInfo(command, wall, workers, seed, _trials_text(cells), notes_for(suite), busy, version)
        report.write_csv(rows, out / f"{suite}.csv")
        report.write_misses(miss, out / f"{suite}_misses.csv")
        report.write_suite_markdown(suite, rows, miss, info, out / f"{suite}.md")
        report.plot_suite(suite, rows, out / f"{suite}.png")
        results[suite] = rows
        from smartmix.bench.terminal import summary_lines

        for line in summary_lines(suite, rows, wall, str(out / f"{suite}.md")):
            echo(line)

    try:
        for suite in suites:
            run_suite(suite)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results



def _trials_text(cells) -> str:
    parts = {}
    for c in cells:
        key = f"{c.trials} per setting" + (f" (N={c.n:,})" if c.suite == "adversarial" else "")
        caps = ", ".join(f"{m}: {k}" for m, k in c.method_trials if k < c.trials)
        parts[key + (f"; {caps}" if caps else "")] = None
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------
# The typer command


def bench(
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            metavar="PATH [PATH ...]",
            help="Recorded-outputs .jsonl files or folders (folders are searched for test.jsonl). Several "
            "at once: --data a.jsonl b.jsonl c/, --data a.jsonl,b.jsonl or --data a --data b. "
            "Default: every test.jsonl under ../shared/data.",
        ),
    ] = None,
    more_data: Annotated[list[str] | None, typer.Argument(hidden=True, metavar="DATA_PATHS")] = None,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="Reference model of the recorded datasets. Default: each file's priciest model."),
    ] = None,
    scores: Annotated[
        str,
        typer.Option(
            "--scores",
            help="Per-item scores of the recorded datasets: recorded (exp of the recorded confidence), none "
            "(confidence removed) or consistency (virtual 'A|B' candidates: does B agree with A).",
        ),
    ] = "recorded",
    n: Annotated[
        str | None,
        typer.Option(
            "--n",
            help=f"Batch size N (bootstrap), comma-separated for several. Default {DEFAULT_N} ({QUICK_N} with "
            "--quick); the small suite: 300,1000,2000; pool: 10000.",
        ),
    ] = None,
    targets: Annotated[str, typer.Option("--targets", help="Target agreements T, comma-separated.")] = DEFAULT_TARGETS,
    confidence: Annotated[float, typer.Option("--confidence", help="Confidence 1-δ of the guarantee.")] = 0.95,
    methods: Annotated[
        str | None,
        typer.Option("--methods", help="Comma-separated methods (policy registry and peers). Default: all but 'reference'."),
    ] = None,
    trials: Annotated[
        int | None, typer.Option("--trials", help="Trials per setting for every suite and method (default: per suite).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Base seed; every trial's seed derives from it.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Small N, few trials, a subset: under 2 minutes.")] = False,
    suite: Annotated[
        str,
        typer.Option(
            "--suite",
            help="Comma-separated: datasets, small (N = 300/1000/2000), adversarial, paper, pool (12 real-priced "
            "models), overheads, router; all = every suite but router.",
        ),
    ] = "all",
    time_limit: Annotated[
        float | None,
        typer.Option(
            "--time-limit", help="CPU seconds one method may take on one trial; past it the trial is reported as "
            "timed out. Default 60.",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for <suite>.csv, .md and .png.")] = Path("benchmarks/results"),
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 2,
    compare: Annotated[
        str | None, typer.Option("--compare", help="Comparator for agreement: exact | numeric | choice | json | ... [exact].")
    ] = None,
) -> None:
    """Benchmark every method against BARGAIN and the hindsight limits; write CSV, Markdown and PNG reports.

    Prints a short summary per suite; the full tables are in the report files.
    """
    paths = _paths([*(data or []), *(more_data or [])])
    if more_data and not data:
        raise ConfigError(f"unexpected argument '{more_data[0]}'; recorded-outputs files go after --data")
    given = {
        "suite": suite,
        "data": [str(p) for p in paths] if paths else None,
        "reference": reference,
        "scores": scores if scores != "recorded" else None,
        "n": n,
        "targets": targets if targets != DEFAULT_TARGETS else None,
        "confidence": confidence if confidence != 0.95 else None,
        "methods": methods,
        "trials": trials,
        "seed": seed if seed != 0 else None,
        "quick": quick,
        "time_limit": time_limit,
        "out": str(out) if out != Path("benchmarks/results") else None,
        "workers": workers if workers != 2 else None,
        "compare": compare,
    }
    run_bench(
        data=paths,
        n=_ints(n, "n") if n else None,
        targets=_floats(targets, "targets"),
        confidence=confidence,
        methods=_methods(methods),
        trials=trials,
        seed=seed,
        quick=quick,
        suites=_suites(suite),
        out=out,
        workers=workers,
        command=command_line(given),
        reference=reference,
        scores=scores,
        time_limit=time_limit,
        compare=compare,
    )
