"""``smartmix bench``: every method, peer and hindsight limit on the same batches; CSV, Markdown and PNG reports.

Registered by the CLI as ``app.command("bench")(bench)``; ``benchmarks/run_all.py`` runs it standalone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from smartmix.errors import ConfigError

__all__ = ["bench", "run_bench", "default_methods", "known_methods"]

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
    from smartmix.bench.suites import SUITES

    names = [s.strip() for s in text.split(",") if s.strip()]
    if "all" in names:
        return list(SUITES)
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise ConfigError(f"unknown suite '{', '.join(unknown) or text}'; choose all or any of {', '.join(SUITES)}")
    return [s for s in SUITES if s in names]


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
            parts += [f"{flag} {v}" for v in value]
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
    compare: str | None = None,
) -> dict[str, list]:
    """Run the suites and write their reports under ``out``; returns the rows of each suite."""
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
    methods = list(methods) if methods is not None else default_methods()
    ns = list(n) if n else [QUICK_N if quick else DEFAULT_N]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list] = {}

    datasets = []
    if "datasets" in suites:
        explicit = bool(data)
        files = find_data_files(list(data)) if data else default_data_paths()
        if quick and not explicit:
            files = files[:QUICK_DATASETS]
        seen: set[str] = set()
        from smartmix.comparators import make_comparator

        comparator = make_comparator(compare) if compare else None
        for f in files:
            ds = load_dataset(f, comparator=comparator)
            if ds.name in seen:
                ds = load_dataset(f, name=f"{ds.name}#{len(seen)}", comparator=comparator)
            seen.add(ds.name)
            datasets.append(ds)

    def notes_for(suite: str) -> list[str]:
        notes = []
        left_out = {m: why for m, why in skipped_methods().items() if m not in methods}
        if left_out and suite != "overheads":
            notes.append(
                "Not run: " + "; ".join(f"{m} ({why})" for m, why in left_out.items())
                + ". The router has its own evaluation: benchmarks/router_eval.py."
            )
        if suite == "datasets":
            notes.append(
                "BARGAIN (bargain==0.1.3, BARGAIN_A with default settings): proxy = the cheapest model, score = "
                "exp(recorded confidence), oracle = the reference, δ = 1 − confidence; charged proxy on every item "
                "plus the reference on every item it sends to the oracle. See benchmarks/README.md."
                if "bargain" in methods
                else "BARGAIN not run (not installed or not selected)."
            )
            notes.append("Datasets: " + ", ".join(f"{d.name} ({d.n_items:,} items: {', '.join(d.models)})" for d in datasets))
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
    pool = start_pool({d.name: d for d in datasets}, workers) if any(s != "overheads" for s in suites) else None

    def run_suite(suite: str) -> None:
        start = time.perf_counter()
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
            _print_overheads(console, rows)
            return
        if suite == "datasets":
            cells = suite_defs.datasets_cells(datasets, ns, targets, confidence, methods, quick, trials)
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
        total = sum(c.trials for c in cells)
        data_map = {d.name: d for d in datasets} if suite == "datasets" else {}
        with Progress(
            TextColumn(f"[bold]{suite:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=console, disable=not progress,
        ) as bar:
            task = bar.add_task(suite, total=total)
            records = run_cells(cells, data_map, seed, workers, lambda k, task=task: bar.advance(task, k), pool=pool)
        wall = time.perf_counter() - start
        rows, miss = [], []
        for cell, recs in zip(cells, records, strict=True):
            models = list(data_map[cell.dataset].models) if suite == "datasets" else None
            rows += summarise(cell, recs, models)
            miss += find_misses(cell, recs)
        busy = sum(r.wall_s for recs in records for r in recs)
        info = report.RunInfo(command, wall, workers, seed, _trials_text(cells), notes_for(suite), busy, version)
        report.write_csv(rows, out / f"{suite}.csv")
        report.write_misses(miss, out / f"{suite}_misses.csv")
        report.write_suite_markdown(suite, rows, miss, info, out / f"{suite}.md")
        report.plot_suite(suite, rows, out / f"{suite}.png")
        results[suite] = rows
        _print_suite(console, suite, rows, wall)



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
# Printed tables


def _print_suite(console: Console, suite: str, rows, wall: float) -> None:
    from smartmix.bench.report import flag, fmt_x

    table = Table(title=f"{suite}: {wall:.0f} s", show_lines=False)
    if suite == "datasets":
        methods = list(dict.fromkeys(r.method for r in rows))
        for col in ["dataset", "N", "T", *methods]:
            table.add_column(col.replace("limit:", ""), justify="right" if col not in ("dataset",) else "left")
        for key in dict.fromkeys((r.dataset, r.n, r.target) for r in rows):
            cell = {r.method: r for r in rows if (r.dataset, r.n, r.target) == key}
            line = [key[0], f"{key[1]:,}", f"{key[2]:g}"]
            for m in methods:
                r = cell.get(m)
                if r is None:
                    line.append("–")
                elif r.kind == "limit":
                    line.append(fmt_x(r.savings_median))
                else:
                    line.append(f"{fmt_x(r.savings_median)} · {r.hit_rate:.2f}{flag(r)}")
            table.add_row(*line)
    elif suite == "adversarial":
        for col in ("method", "kind", "settings", "lowest hit rate", "where", "below confidence"):
            table.add_column(col)
        for m in dict.fromkeys(r.method for r in rows):
            mrows = [r for r in rows if r.method == m]
            w = min(mrows, key=lambda r: r.hit_rate)
            below = sum(1 for r in mrows if r.hit_rate < r.confidence)
            table.add_row(
                m, mrows[0].kind, str(len(mrows)), f"{w.hit_rate:.3f} (≥{w.hit_wilson_lower:.3f})",
                f"N={w.n:,} T={w.target:g} {w.dataset} {w.scenario}",
                f"[red]{below}[/]" if below and w.kind == "valid" else str(below),
            )
    else:
        from smartmix.backends.simulated import PAPER_REPORTED

        datasets = list(dict.fromkeys(r.dataset for r in rows))
        table.add_column("method")
        for d in datasets:
            table.add_column(f"{d} avg", justify="right")
        table.add_column("max", justify="right")
        table.add_column("lowest hit", justify="right")
        for m in dict.fromkeys(r.method for r in rows):
            line = [m]
            for d in datasets:
                vals = [r.savings_median for r in rows if r.method == m and r.dataset == d]
                line.append(fmt_x(sum(vals) / len(vals)) if vals else "–")
            line.append(fmt_x(max(r.savings_median for r in rows if r.method == m)))
            line.append(f"{min(r.hit_rate for r in rows if r.method == m):.2f}")
            table.add_row(*line)
        table.add_row("paper (reported)", *[fmt_x(PAPER_REPORTED.get(d, math.nan)) for d in datasets], fmt_x(PAPER_REPORTED["max"]), "")
    Console().print(table)


def _print_overheads(console: Console, rows) -> None:
    table = Table(title="overheads")
    for col in ("what", "name", "setting", "size", "µs/item", "median ms", "p90 ms"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.what, r.name, r.setting, f"{r.size:,}", "" if math.isnan(r.us_per_item) else f"{r.us_per_item:.3f}",
            f"{r.median_ms:.2f}", f"{r.p90_ms:.2f}",
        )
    Console().print(table)


# ---------------------------------------------------------------------------------------------------
# The typer command


def bench(
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="Recorded-outputs .jsonl file or folder (searched for test.jsonl); repeatable. "
            "Default: every test.jsonl under ../shared/data.",
        ),
    ] = None,
    n: Annotated[
        str | None,
        typer.Option("--n", help=f"Batch size N (bootstrap), comma-separated for several. Default {DEFAULT_N} ({QUICK_N} with --quick)."),
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
        str, typer.Option("--suite", help="all | datasets | adversarial | paper | overheads (comma-separated).")
    ] = "all",
    out: Annotated[Path, typer.Option("--out", help="Folder for <suite>.csv, .md and .png.")] = Path("benchmarks/results"),
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 2,
    compare: Annotated[
        str | None, typer.Option("--compare", help="Comparator for agreement: exact | numeric | choice | json | ... [exact].")
    ] = None,
) -> None:
    """Benchmark every method against BARGAIN and the hindsight limits; write CSV, Markdown and PNG reports."""
    given = {
        "suite": suite,
        "data": [str(p) for p in data] if data else None,
        "n": n,
        "targets": targets if targets != DEFAULT_TARGETS else None,
        "confidence": confidence if confidence != 0.95 else None,
        "methods": methods,
        "trials": trials,
        "seed": seed if seed != 0 else None,
        "quick": quick,
        "out": str(out) if out != Path("benchmarks/results") else None,
        "workers": workers if workers != 2 else None,
        "compare": compare,
    }
    run_bench(
        data=data,
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
        compare=compare,
    )
