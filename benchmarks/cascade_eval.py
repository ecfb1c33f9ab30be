"""Savings and validity of the cascade methods on the same seeded batches as ``smartmix bench``.

Recorded sets are bootstrapped to n items exactly as the bench's ``datasets`` suite does (same seeds, so the
same batches); ``--scores none`` removes the recorded confidence. Synthetic pools (``--pools``) put the
cheapest candidate's agreement exactly at T and 0.5 points below, with the bench's adversarial prices and
synthetic scores. Every method in ``--methods`` (policy names, and ``bargain``) runs on every batch.

    python benchmarks/cascade_eval.py --n 300,1000,2000 --targets 0.8,0.9,0.95 --scores recorded,none \
        --methods cascade --trials 100 --out benchmarks/results/cascade/small.md

The report starts with the command and the code version; one row per setting and method: median and 5th
percentile of savings (reference-only cost / method cost), hit rate (realised agreement >= T) and its
Wilson 95% lower bound.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from smartmix.bench.data import (  # noqa: E402
    adversarial_batch,
    adversarial_rates,
    bootstrap_batch,
    load_dataset,
    policy_seed,
    trial_seed,
)
from smartmix.calibration import Calibration  # noqa: E402
from smartmix.core.offline import simulate  # noqa: E402
from smartmix.policies import Guarantee  # noqa: E402
from smartmix.stats import wilson_lower  # noqa: E402

_DATA: dict = {}


def _init(paths: list[str]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for p in paths:
        d = load_dataset(Path(p))
        _DATA[d.name] = d


def _calibration_split(name: str):
    """Half of the set's items (fixed split) as past data; the batches are drawn from the other half only."""
    from dataclasses import replace

    data = _DATA[name]
    rows = np.random.default_rng(12345).permutation(data.n_items)
    past, now = rows[: data.n_items // 2], rows[data.n_items // 2 :]
    score = data.score if data.score is not None else np.full(data.agree.shape, np.nan)
    calibration = Calibration(data.models, data.agree[past], data.cost[past], score[past], f"{name}[half]")
    rest = replace(data, agree=data.agree[now], cost=data.cost[now], score=None if data.score is None else score[now])
    return calibration, rest


def _batch(setting: tuple, trial: int, base: int):
    kind, name, n, target, scores = setting
    if kind == "calibrated":
        seed = trial_seed(base, "calibrated", name, n, round(target, 6), "", trial)
        calibration, rest = _calibration_split(name)
        batch = bootstrap_batch(rest, n, seed)
        return batch, batch.score, policy_seed(seed), (("calibration", calibration),)
    if kind == "recorded":
        seed = trial_seed(base, "datasets", name, n, round(target, 6), "", trial)
        batch = bootstrap_batch(_DATA[name], n, seed)
    else:  # synthetic pool: name = "<candidates>@<offset>[$<price>,...]" (offset below T, in points)
        shape, _, priced = name.partition("$")
        cands, offset = shape.split("@")
        prices = [float(p) for p in priced.split("/")] if priced else None
        if "/" in offset:  # one offset per candidate: 2@30/0 puts the first 30 points below T, the second at T
            rates = tuple(target - float(o) / 100 for o in offset.split("/"))
        else:
            rates = adversarial_rates(target - float(offset) / 100, int(cands))
        seed = trial_seed(base, "adversarial", name, n, round(target, 6), "", trial)
        batch = adversarial_batch(n, rates, seed, prices)
        if scores == "recorded+calibration":
            # past outputs: an independent pool with the same rates (1,000 items)
            past = adversarial_batch(1000, rates, seed + 10**9, prices)
            calibration = Calibration(past.models, past.agree, past.cost, past.score, f"pool {name} (past)")
            return batch, batch.score, policy_seed(seed), (("calibration", calibration),)
    score = batch.score if scores == "recorded" else None
    return batch, score, policy_seed(seed), ()  # the method's seed: a stream apart from the batch's


def _run(job: tuple) -> list[tuple]:
    setting, trials, methods, base, confidence, policy_options = job
    target = setting[3]
    rows = []
    for trial in trials:
        batch, score, seed, options = _batch(setting, trial, base)
        for method in methods:
            if method == "bargain":
                if score is None:
                    continue
                from smartmix.bench.peers import run_bargain

                out = run_bargain(
                    batch.agree[:, 0], batch.score[:, 0], batch.cost[:, 0], batch.cost[:, -1], target, confidence, seed
                )
                rows.append((setting, method, out.reference_cost / out.cost, out.realised_agreement >= target - 1e-12))
            else:
                extra = dict(options)
                out = simulate(
                    method, batch.agree, batch.cost, batch.models, Guarantee(target, confidence), seed=seed,
                    score=score, calibration=extra.get("calibration"), options=policy_options,
                )
                rows.append((setting, method, out.savings, out.hit(target)))
    return rows


def _code_version() -> str:
    """The commit, marked dirty when tracked files other than the reports differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if changed else "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", default=None, help="recorded-outputs test.jsonl (repeatable)")
    ap.add_argument("--n", default="2000")
    ap.add_argument("--targets", default="0.9")
    ap.add_argument("--scores", default="recorded", help="recorded,none")
    ap.add_argument("--methods", default="cascade,bargain")
    ap.add_argument("--pools", default="", help="synthetic pools, e.g. 1@0,1@0.5,2@0 (candidates@points below T; 1@0$12 prices the candidate at 12, the reference at 20; several prices: 2@0$6/12; one offset per candidate: 2@30/0$1/4)")
    ap.add_argument("--calibrated", action="store_true", help="also: half of each set as past data, batches from the other half; pools: an independent 1,000-item pool as past data")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--allowance", type=float, default=None, help="the profiling methods' never-worse allowance (as `smartmix run --allowance`)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    paths = args.data if args.data is not None else sorted(str(p) for p in (ROOT.parent / "shared" / "data").glob("*/test.jsonl"))
    if args.pools:
        paths = args.data or []
    names = [Path(p).parent.name for p in paths]
    ns = [int(x) for x in args.n.split(",")]
    targets = [float(x) for x in args.targets.split(",")]
    methods = args.methods.split(",")
    settings = [("recorded", name, n, t, sc) for name in names for sc in args.scores.split(",") for n in ns for t in targets]
    if args.calibrated:
        settings += [("calibrated", name, n, t, "recorded+calibration") for name in names for n in ns for t in targets]
    pools = [pool for pool in args.pools.split(",") if pool]
    settings += [("pool", pool, n, t, "recorded") for pool in pools for n in ns for t in targets]
    if args.calibrated:
        settings += [("pool", pool, n, t, "recorded+calibration") for pool in pools for n in ns for t in targets]
    chunk = 25
    jobs = [
        (s, list(range(a, min(args.trials, a + chunk))), methods, args.seed, args.confidence,
         () if args.allowance is None else (("allowance", args.allowance),))
        for s in settings
        for a in range(0, args.trials, chunk)
    ]
    version = _code_version()
    start = time.time()
    results: dict = {}
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(paths,)) as pool:
        for rows in pool.map(_run, jobs):
            for setting, method, savings, hit in rows:
                results.setdefault((setting, method), []).append((savings, hit))
    wall = time.time() - start

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/cascade_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Cascade evaluation",
        "",
        f"Command: `{command}`",
        "",
        f"Code version: `{version}`; {args.trials} trials per setting; δ = {1 - args.confidence:.3g}; wall {wall:.0f} s.",
        "",
        "| set | scores | n | T | method | trials | median savings | p5 savings | hit rate | Wilson LB |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    table = []
    for (setting, method), vals in results.items():
        s = np.array([v[0] for v in vals])
        h = int(sum(v[1] for v in vals))
        row = {
            "set": setting[1], "scores": setting[4], "n": setting[2], "target": setting[3], "method": method,
            "trials": len(vals), "median": float(np.median(s)), "p5": float(np.percentile(s, 5)),
            "hit_rate": h / len(vals), "wilson": wilson_lower(h, len(vals)),
        }
        table.append(row)
    table.sort(key=lambda r: (r["set"], r["scores"], r["n"], r["target"], r["method"]))
    for r in table:
        lines.append(
            f"| {r['set']} | {r['scores']} | {r['n']} | {r['target']} | {r['method']} | {r['trials']} | "
            f"{r['median']:.3f} | {r['p5']:.3f} | {r['hit_rate']:.3f} | {r['wilson']:.3f} |"
        )
    out.write_text("\n".join(lines) + "\n")
    with out.with_suffix(".csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
