"""Validity of exhaustive / efficient / mix on small batches: hit rate with its Wilson lower bound.

Synthetic pools (smartmix.core.offline.synthetic_pool): two candidates, the cheaper agreeing exactly at T (or 0.5
points below), the other 0.25 points below it; prices 1, 2 and 20 (reference). With --calibration, each trial
also gets past outputs drawn from an independent pool with the same rates (1,000 items), and the policy
certifies the plan shape they choose. Optionally shared recorded sets (bootstrap batches) with --data.

    python benchmarks/validity_small.py --n 2000 --targets 0.9 --trials 1000 --workers 2 --out benchmarks/results/validity_small.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from smartmix.calibration import Calibration
from smartmix.core.offline import simulate, synthetic_pool
from smartmix.policies import Guarantee
from smartmix.stats import wilson_lower

PRICES = [1.0, 2.0, 20.0]


def rates_for(target: float, scenario: str) -> list[float]:
    top = target if scenario == "at T" else target - 0.005
    return [top, top - 0.0025]


def one_trial(args: tuple) -> tuple[bool, float]:
    method, n, target, scenario, calibrated, data_name, seed = args
    if data_name:
        from smartmix.bench.data import bootstrap_batch, load_dataset

        data = _dataset(data_name)
        batch = bootstrap_batch(data, n, seed)
        agree, cost, models, score = batch.agree, batch.cost, batch.models, batch.score
        cal = None
        if calibrated:
            past = load_dataset(Path(data_name).with_name("train.jsonl"))
            cal = Calibration(past.models, past.agree, past.cost, np.exp(past.confidence), "train.jsonl")
    else:
        rates = rates_for(target, scenario)
        agree, cost, models = synthetic_pool(n, rates, PRICES, seed=seed)
        score = None
        cal = None
        if calibrated:
            p_agree, p_cost, _ = synthetic_pool(1000, rates, PRICES, seed=seed + 10**9)
            cal = Calibration(models, p_agree, p_cost, np.full(p_agree.shape, np.nan), "synthetic past pool")
    out = simulate(method, agree, cost, models, Guarantee(target, 0.95), seed=seed + 1, score=score, calibration=cal)
    return out.hit(target), out.savings


_CACHE: dict = {}


def _dataset(path: str):
    from smartmix.bench.data import load_dataset

    if path not in _CACHE:
        _CACHE[path] = load_dataset(Path(path))
    return _CACHE[path]


def code_version() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    return (git("describe", "--always", "--tags") or "unknown") + dirty


def write_report(rows: list, args: argparse.Namespace, version: str, start: float, done: bool) -> str:
    lines = [
        "# Validity on small batches",
        "",
        "Command:",
        "",
        "```",
        "python " + " ".join(sys.argv),
        "```",
        "",
        f"Code {version}; {time.time() - start:.0f} s wall on {args.workers} worker(s); δ = 0.05; "
        f"{args.trials} trials per setting. Hit rate = share of trials whose realised agreement reached T; "
        "Wilson 95% lower bound beside. Savings = reference-only cost ÷ bill (median, 5th percentile).",
        "",
        "| pool | N | T | method | calibration | trials | hit rate | Wilson LB | median savings | p5 savings |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]:,} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.3f} | {r[7]:.3f} | {r[8]:.2f}x | {r[9]:.2f}x |")
    text = "\n".join(lines) + "\n"
    if not done:
        text += "\n(Run in progress: settings not listed yet are still running.)\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[2000])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    ap.add_argument("--methods", nargs="+", default=["exhaustive", "efficient", "mix"])
    ap.add_argument("--scenarios", nargs="+", default=["at T", "T-0.5pt"])
    ap.add_argument("--calibration", choices=["no", "yes", "both"], default="both")
    ap.add_argument("--data", nargs="*", default=[], help="recorded test.jsonl files (train.jsonl beside for calibration)")
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cal_modes = {"no": [False], "yes": [True], "both": [False, True]}[args.calibration]
    settings = []
    for n in args.n:
        for t in args.targets:
            for cal in cal_modes:
                for m in args.methods:
                    if cal and m == "exhaustive":
                        continue  # with calibration it is the efficient design
                    for sc in args.scenarios:
                        settings.append((m, n, t, sc, cal, ""))
                    for d in args.data:
                        settings.append((m, n, t, "recorded", cal, d))
    rows = []
    start = time.time()
    version = code_version()  # the code the workers run, taken before they start
    with ProcessPoolExecutor(args.workers) as pool:
        for m, n, t, sc, cal, d in settings:
            tasks = [(m, n, t, sc, cal, d, 1000 * i + 7) for i in range(args.trials)]
            res = list(pool.map(one_trial, tasks, chunksize=20))
            hits = sum(h for h, _ in res)
            sav = np.array([s for _, s in res])
            label = Path(d).parent.name if d else f"synthetic {sc}"
            row = (label, n, t, m, "yes" if cal else "no", args.trials, hits / args.trials,
                   wilson_lower(hits, args.trials), float(np.median(sav)), float(np.percentile(sav, 5)))
            rows.append(row)
            print(" | ".join(str(x) if not isinstance(x, float) else f"{x:.3f}" for x in row), flush=True)
            write_report(rows, args, version, start, done=False)
    text = write_report(rows, args, version, start, done=True)
    print(text)


if __name__ == "__main__":
    main()
