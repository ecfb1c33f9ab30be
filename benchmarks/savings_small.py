"""Savings on small batches of the shared recorded sets: median and 5th-percentile savings and hit rate.

Bootstrap batches (items drawn with replacement) of each set's test.jsonl at each N and T, δ = 0.05; the same
batches for every method. exhaustive, efficient and mix use no confidence scores, so their figures are the same
with the recorded confidence removed.

    python benchmarks/savings_small.py --n 300 1000 2000 --targets 0.8 0.9 0.95 --trials 20 --workers 2 \\
        --out benchmarks/results/savings_small.md
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from smartmix.bench.data import bootstrap_batch, load_dataset, policy_seed, trial_seed
from smartmix.core.offline import simulate
from smartmix.policies import Guarantee
from smartmix.stats import wilson_lower

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
_DATA: dict = {}


def one(args: tuple) -> list[tuple[str, bool, float]]:
    path, n, target, methods, trial = args
    if path not in _DATA:
        _DATA[path] = load_dataset(Path(path))
    seed = trial_seed(0, Path(path).parent.name, n, target, trial)
    batch = bootstrap_batch(_DATA[path], n, seed)
    out = []
    for m in methods:
        o = simulate(m, batch.agree, batch.cost, batch.models, Guarantee(target, 0.95), seed=policy_seed(seed),
                     score=batch.score)
        out.append((m, o.hit(target), o.savings))
    return out


def main() -> None:
    from validity_small import code_version

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[300, 1000, 2000])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    ap.add_argument("--methods", nargs="+", default=["exhaustive", "efficient", "mix"])
    ap.add_argument("--data", nargs="*", default=None)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    files = [Path(p) for p in args.data] if args.data else sorted(ROOT.glob("*/test.jsonl"))
    start = time.time()
    version = code_version()  # the code the workers run, taken before they start
    rows = []
    with ProcessPoolExecutor(args.workers) as pool:
        for f in files:
            for n in args.n:
                for t in args.targets:
                    res = list(pool.map(one, [(str(f), n, t, tuple(args.methods), i) for i in range(args.trials)]))
                    for j, m in enumerate(args.methods):
                        hits = sum(r[j][1] for r in res)
                        sav = np.array([r[j][2] for r in res])
                        row = (f.parent.name, n, t, m, float(np.median(sav)), float(np.percentile(sav, 5)), hits / len(res),
                               wilson_lower(hits, len(res)))
                        rows.append(row)
                        print(row, flush=True)
    lines = ["# Savings on small batches of the shared sets", "", "Command:", "", "```",
             "python " + " ".join(sys.argv), "```", "",
             f"Code {version}; {time.time() - start:.0f} s wall on {args.workers} worker(s); δ = 0.05; "
             f"{args.trials} bootstrap batches per setting (the same for every method).", "",
             "| dataset | N | T | method | median savings | p5 savings | hit rate | Wilson LB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]:,} | {r[2]} | {r[3]} | {r[4]:.2f}x | {r[5]:.3f}x | {r[6]:.2f} | {r[7]:.2f} |")
    worst = min(r[5] for r in rows)
    lines += ["", f"Worst 5th-percentile savings over every setting: {worst:.3f}x."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
