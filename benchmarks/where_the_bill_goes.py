"""Where the bill goes at N = 50,000: the cascade's and the mix's spending split by what it bought, beside the
learned limits (``smartmix.bench.limits``), on bootstrap batches of the shared sets.

    python benchmarks/where_the_bill_goes.py --trials 5 --out benchmarks/results/cascade/where_the_bill_goes.md

Cascade, per item group, as shares of its bill: the pilot (every model the pilot asked, and the reference),
the certification sample (the head and the reference), the items whose head answer is kept (the head only)
and the rest (the head, then the reference). Mix: the profiling share of its bill and the items profiled, and
its savings against what it would have saved stopping at the best of its own looks in hindsight (the same
bounds, the plan priced as its look-ahead prices it): how much of the gap to the learned limit is the stopping
rule's. Medians over ``--trials`` batches. Run from the repository root (reads ../shared/data).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_eval import _code_version  # noqa: E402

from smartmix.bench.data import (  # noqa: E402
    bootstrap_batch,
    dataset_name,
    default_data_paths,
    load_dataset,
    policy_seed,
    trial_seed,
)
from smartmix.bench.limits import learned_mix_cost, learned_two_tier_cost  # noqa: E402
from smartmix.core.driver import execute, run_inline  # noqa: E402
from smartmix.core.offline import OfflineSource  # noqa: E402
from smartmix.policies import BatchSpec, Guarantee, make_policy  # noqa: E402

TESTS = {dataset_name(path): path for path in default_data_paths(Path(__file__).resolve().parents[1])}
TARGETS = (0.8, 0.9, 0.95)
N = 50_000


def best_look_cost(policy, execution, bill: float) -> float:
    """The mix's bill had it stopped at the best of its own looks in hindsight (its actual bill if cheaper)."""
    costs = policy.unit_costs()
    costs = np.where(np.isfinite(costs), costs, 1e9)
    names = list(policy.spec.models)
    best = bill
    for look in policy.looks:
        n = look["profiled"]
        lower = np.zeros(len(names))
        lower[policy.spec.reference] = 1.0
        for model, bound in look["bounds"].items():
            lower[names.index(model)] = bound
        profiled = float(execution.spent[policy.order[:n]].sum())
        best = min(best, profiled + (N - n) * policy.plan_unit_cost(n, lower, costs))
    return best


def trial(args: tuple[str, float, int]) -> dict:
    name, target, t = args
    data = load_dataset(TESTS[name])
    seed = trial_seed(0, "bill", name, N, target, t)
    batch = bootstrap_batch(data, N, seed)
    guarantee = Guarantee(target, 0.95)
    reference_only = float(batch.cost[:, -1].sum())
    row = {"name": name, "target": target}
    for method in ("cascade", "mix"):
        spec = BatchSpec(N, batch.models, guarantee, seed=policy_seed(seed))
        policy = make_policy(method, spec)
        execution = run_inline(execute(policy, OfflineSource(batch.agree, batch.cost, batch.score)))
        bill = execution.cost
        row[f"{method}_savings"] = reference_only / bill
        if method == "cascade":
            pilot = policy.order[: policy.pilot_size]
            in_pilot = np.zeros(N, dtype=bool)
            in_pilot[pilot] = True
            sampled = np.zeros(N, dtype=bool)
            sampled[policy.sample] = True
            sampled &= ~in_pilot
            kept = ~in_pilot & ~sampled & (execution.final != spec.reference)
            rest = ~in_pilot & ~sampled & ~kept
            for group, mask in (("pilot", in_pilot), ("sample", sampled), ("kept", kept), ("rest", rest)):
                row[f"cascade_{group}"] = float(execution.spent[mask].sum()) / bill
            row["cascade_labels"] = int(sampled.sum())
            row["cascade_head"] = policy.spec.models[policy.head] if policy.head is not None else "–"
        else:
            row["mix_profiling"] = execution.profiling_cost / bill
            row["mix_profiled"] = int(execution.certificate.profiled)
            row["mix_best_look"] = reference_only / best_look_cost(policy, execution, bill)
    row["limit_two_tier"] = reference_only / learned_two_tier_cost(batch.agree, batch.cost, batch.score, target, 0.05)
    row["limit_mix"] = reference_only / learned_mix_cost(batch.agree, batch.cost, target, 0.05)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cascade/where_the_bill_goes.md"))
    args = ap.parse_args()
    jobs = [(name, target, t) for name in TESTS for target in TARGETS for t in range(args.trials)]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(trial, jobs))
    command = "python benchmarks/where_the_bill_goes.py " + " ".join(sys.argv[1:])
    lines = [
        "# Where the bill goes at N = 50,000",
        "",
        f"Command: `{command}`",
        "",
        f"Code version `{_code_version()}`; {args.trials} bootstrap batches per row, δ = 0.05; medians. Shares are "
        "of each method's own bill. Learned limits as in benchmarks/README.md (no pilot, one bound, the best "
        "sample size in hindsight).",
        "",
        "| dataset | T | cascade | ÷ learned two-tier | head | pilot | sample (labels) | kept | rest | mix "
        "| ÷ learned mix | mix profiling share (items) | mix ÷ its best look |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in TESTS:
        for target in TARGETS:
            mine = [r for r in rows if r["name"] == name and r["target"] == target]

            def med(key: str, rows=mine) -> float:
                return float(np.median([r[key] for r in rows]))

            heads = sorted({r["cascade_head"] for r in mine})
            lines.append(
                f"| {name} | {target} | {med('cascade_savings'):.2f} | "
                f"{np.median([r['cascade_savings'] / r['limit_two_tier'] for r in mine]):.2f} | {', '.join(heads)} | "
                f"{med('cascade_pilot'):.3f} | {med('cascade_sample'):.3f} ({med('cascade_labels'):.0f}) | "
                f"{med('cascade_kept'):.3f} | {med('cascade_rest'):.3f} | {med('mix_savings'):.2f} | "
                f"{np.median([r['mix_savings'] / r['limit_mix'] for r in mine]):.2f} | "
                f"{med('mix_profiling'):.3f} ({med('mix_profiled'):.0f}) | "
                f"{np.median([r['mix_savings'] / r['mix_best_look'] for r in mine]):.2f} |"
            )
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
