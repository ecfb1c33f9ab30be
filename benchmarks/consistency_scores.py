"""Cascades without logprobs: consistency scores vs the model mix on the recorded sets, confidence removed.

For every recorded set (``../shared/data/*/test.jsonl``) the recorded ``confidence`` is dropped, and
:func:`smartmix.scores.consistency_candidates` adds virtual candidates "A|B" (A's answer, cost A + B,
score 1 when B agrees with A) and "A|B+C+D" (score = share of the three cheapest other candidates that
agree with A). Each trial draws N items with replacement from the set (the joint behaviour of the models
on an item stays real) and runs, with the offline simulator:

* ``mix``: the model mix on the real pool (needs no score);
* ``cascade-none``: the cascade on the real pool with no score at all (what a pool without logprobs gets);
* ``cascade-consistency``: the cascade on the pool with the virtual candidates;
* ``cascade-recorded``: the cascade with the recorded confidence, for comparison (not "without logprobs").

Hit = the realised agreement of the trial's answers with the reference is >= T. Writes a Markdown report
that starts with the command and the code version.

    python benchmarks/consistency_scores.py --trials 100 --out benchmarks/results/consistency_scores.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from smartmix.simulate import simulate

from smartmix.backends.replay import RecordedOutputs
from smartmix.comparators import make_comparator
from smartmix.policies import Guarantee
from smartmix.scores import consistency_candidates

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("mix", "cascade-none", "cascade-consistency", "cascade-recorded")


def code_version() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--", "src", "benchmarks") else ""
    return f"{git('describe', '--always', '--dirty')} ({git('rev-parse', 'HEAD')}){dirty}"


def load(path: Path, compare: str):
    recorded = RecordedOutputs.load(path)
    models = recorded.pool().names
    comparator = make_comparator(compare)
    arrays = recorded.arrays(models, models[-1], comparator)
    answers = np.array([[recorded.output(it.id, m).answer for m in models] for it in recorded.items], dtype=object)
    none = np.full(arrays.agree.shape, np.nan)
    virtual = consistency_candidates(answers, arrays.agree, arrays.cost, none, models, comparator)
    recorded_scores = np.exp(arrays.confidence)
    return tuple(models), arrays.agree, arrays.cost, recorded_scores, virtual


def trial(method, data, rows, target, seed):
    models, agree, cost, recorded_scores, (v_agree, v_cost, v_score, v_models) = data
    guarantee = Guarantee(target, 0.95)
    if method == "mix":
        return simulate("mix", agree[rows], cost[rows], models, guarantee, seed=seed)
    if method == "cascade-none":
        return simulate("cascade", agree[rows], cost[rows], models, guarantee, seed=seed, score=np.full((len(rows), len(models)), np.nan))
    if method == "cascade-recorded":
        return simulate("cascade", agree[rows], cost[rows], models, guarantee, seed=seed, score=recorded_scores[rows])
    return simulate("cascade", v_agree[rows], v_cost[rows], v_models, guarantee, seed=seed, score=v_score[rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="*", type=Path, default=None, help="recorded-outputs files (default: ../shared/data/*/test.jsonl)")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--targets", default="0.8,0.9")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--compare", default="exact")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    paths = args.data or sorted((ROOT.parent / "shared" / "data").glob("*/test.jsonl"))
    if not paths:
        raise SystemExit("no recorded sets found: pass --data FILE ...")
    targets = [float(t) for t in args.targets.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    command = "python benchmarks/consistency_scores.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Cascades without logprobs: consistency scores vs the mix",
        "",
        f"Command: `{command}`",
        "",
        f"Code: {code_version()}",
        "",
        f"N = {args.n:,} items per trial (drawn with replacement from each set), confidence 0.95, "
        f"{args.trials} trials per setting, comparator `{args.compare}`. Savings = reference-only cost / cost "
        "(mean over trials); hit rate = share of trials whose realised agreement reached T.",
        "",
        "| set | T | method | mean savings | median savings | hit rate | chain chosen most often | virtual candidates |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    started = time.time()
    for path in paths:
        name = path.parent.name
        data = load(path, args.compare)
        n_virtual = len(data[4][3]) - len(data[0])
        for target in targets:
            for method in methods:
                savings, hits, chains = [], [], {}
                for seed in range(args.trials):
                    rows = np.random.default_rng(10_000 + seed).integers(0, data[1].shape[0], args.n)
                    outcome = trial(method, data, rows, target, seed)
                    savings.append(outcome.savings)
                    hits.append(outcome.hit(target))
                    details = outcome.certificate.details
                    chain = "fallback: mix" if details.get("fallback") else " > ".join(details.get("chain") or []) or "-"
                    chains[chain] = chains.get(chain, 0) + 1
                top = max(chains, key=chains.__getitem__)
                shown = top.replace("|", "\\|")  # a virtual model's name inside a Markdown table
                row = (
                    f"| {name} | {target:g} | {method} | {np.mean(savings):.2f}x | {np.median(savings):.2f}x | "
                    f"{np.mean(hits):.3f} | {shown} ({chains[top]}/{args.trials}) | "
                    f"{n_virtual if method == 'cascade-consistency' else ''} |"
                )
                lines.append(row)
                print(row, f"[{time.time() - started:.0f}s]", flush=True)
    lines += ["", f"Wall time: {time.time() - started:.0f} s."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
