"""Cascade routing (``smartmix run --method cascade --router FILE``): validity at the edge, and what it buys.

    python benchmarks/cascade_routing.py --trials 1000 --set-trials 20 --out benchmarks/results/cascade/routing.md

1. **Validity at the edge** (``smartmix.bench.data.routing_batch``): N = 10,000 items (the smallest batch whose
   pilot stays out of the certificate, the only case that routes), a hard 15% the head always fails and the
   predictor flags, and on the rest exactly as many wrong answers as the target allows (or 0.5 point more),
   barely informative scores. Hit rate with its Wilson 95% lower bound over ``--trials`` batches, how many
   items were routed, and savings with and without the predictor on the same batches and method seeds.
2. **The shared sets**: a predictor trained on each set's ``train.jsonl`` (the README's ``smartmix router
   train``, MiniLM features; ``--features hashing`` for a quick run) predicts every item of ``test.jsonl``;
   bootstrap batches of N = 50,000 test items carry their predictions; ``cascade`` runs with and without them
   on the same batches. The head's AUROC says how much the predictor knows.

Run from the repository root (reads ../shared/data).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import cache
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
    routing_batch,
    trial_seed,
)
from smartmix.core.offline import simulate  # noqa: E402
from smartmix.policies import Guarantee  # noqa: E402
from smartmix.stats import auroc, wilson_lower  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TESTS = {dataset_name(path): path for path in default_data_paths(ROOT)}  # every */test.jsonl of ../shared/data
EDGE = [(0.9, 0.0), (0.9, 0.005), (0.95, 0.0), (0.95, 0.005)]
EDGE_N = 10_000
SET_N = 50_000
COMPARE_TRIALS = 100  # edge batches also run without the predictor (savings side by side)


def routed_items(out) -> int:
    routing = out.certificate.details.get("routed_to_reference")
    return int(routing["items"]) if routing else 0


def edge_trial(args: tuple[float, float, int]) -> tuple[bool, int, float, float]:
    target, below, t = args
    seed = trial_seed(0, "routing-edge", EDGE_N, target, below, t)
    batch, predicted = routing_batch(EDGE_N, target, seed, below)
    guarantee = Guarantee(target, 0.95)
    run = dict(seed=policy_seed(seed), score=batch.score)
    out = simulate("cascade", batch.agree, batch.cost, batch.models, guarantee, predicted=predicted, **run)
    plain = (simulate("cascade", batch.agree, batch.cost, batch.models, guarantee, **run).savings
             if t < COMPARE_TRIALS else float("nan"))
    return out.hit(target), routed_items(out), out.savings, plain


def predictions(name: str, features: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The trained predictor's agreement for every test item and model (columns in the dataset's order)."""
    from smartmix.api import predict_agreement, replay_job
    from smartmix.router.embedding import Embedder, HashingEmbedder
    from smartmix.router.predictor import AgreementPredictor, train_from_recorded

    embedder = {"minilm": Embedder, "hashing": HashingEmbedder}[features]()
    test = TESTS[name]
    data = dataset(name)
    reference = data.models[-1]
    predictor = train_from_recorded([test.with_name("train.jsonl")], reference, predictor=AgreementPredictor(embedder))
    job = replay_job(test, reference=reference)
    with tempfile.TemporaryDirectory() as folder:
        by_name = predict_agreement(predictor.save(Path(folder) / "router.npz"), job, all_models=True)
    columns = [job.pool.names.index(m) for m in data.models]
    return by_name[:, columns], data.models


@cache
def dataset(name: str):
    return load_dataset(TESTS[name])


def set_trial(args) -> tuple[str, float, bool, bool, float, float, float, str]:
    name, target, t, predicted = args
    data = dataset(name)
    seed = trial_seed(0, "routing-set", name, SET_N, target, t)
    rows = np.random.default_rng(seed).integers(0, data.n_items, SET_N)
    batch = bootstrap_batch(data, SET_N, seed)
    assert np.array_equal(batch.agree, data.agree[rows])  # the same rows carry their predictions
    guarantee = Guarantee(target, 0.95)
    run = dict(seed=policy_seed(seed), score=batch.score)
    out = simulate("cascade", batch.agree, batch.cost, batch.models, guarantee, predicted=predicted[rows], **run)
    plain = simulate("cascade", batch.agree, batch.cost, batch.models, guarantee, **run)
    head = out.certificate.details.get("chain", ["–"])[0]
    return (name, target, out.hit(target), plain.hit(target), out.savings, plain.savings, routed_items(out) / SET_N,
            head)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--set-trials", type=int, default=20)
    ap.add_argument("--features", choices=("minilm", "hashing"), default="minilm")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cascade/routing.md"))
    args = ap.parse_args()
    start = time.time()
    command = "python benchmarks/cascade_routing.py " + " ".join(sys.argv[1:])
    lines = [
        "# Cascade routing: validity at the edge, and savings on the shared sets",
        "",
        f"Command: `{command}`",
        "",
        f"Code version `{_code_version()}`. See the script's docstring for the design.",
        "",
        f"## Validity at the edge (N = {EDGE_N:,}, {args.trials} trials per row)",
        "",
        "| T | batch agreement | hit rate | Wilson 95% LB | routed items (median) | savings routed (median) "
        f"| savings without predictor (median, first {COMPARE_TRIALS} trials) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        for target, below in EDGE:
            rows = list(pool.map(edge_trial, [(target, below, t) for t in range(args.trials)], chunksize=10))
            hits = sum(r[0] for r in rows)
            plain = [r[3] for r in rows if r[3] == r[3]]
            where = "exactly T" if below == 0 else f"{below * 100:g} pt below T"
            lines.append(
                f"| {target} | {where} | {hits / len(rows):.3f} | {wilson_lower(hits, len(rows), 0.95):.3f} | "
                f"{np.median([r[1] for r in rows]):.0f} | {np.median([r[2] for r in rows]):.3f} | "
                f"{np.median(plain):.3f} |"
            )
            print(lines[-1], flush=True)
        lines += [
            "",
            f"## Shared sets (N = {SET_N:,}, {args.set_trials} trials per row, predictor: {args.features} features, "
            "trained on train.jsonl)",
            "",
            "| dataset | T | head AUROC | routed share (median) | savings routed | savings without | ratio "
            "| hit routed | hit without |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name in (name for name, path in TESTS.items() if path.with_name("train.jsonl").exists()):
            predicted, models = predictions(name, args.features)
            data = dataset(name)
            jobs = [(name, target, t, predicted) for target in (0.8, 0.9, 0.95) for t in range(args.set_trials)]
            results = list(pool.map(set_trial, jobs))
            for target in (0.8, 0.9, 0.95):
                mine = [r for r in results if r[1] == target]
                routed, plain = np.median([r[4] for r in mine]), np.median([r[5] for r in mine])
                # the predictor's AUROC for the model that heads the cascade most often at this target
                name_of_head = Counter(r[7] for r in mine).most_common(1)[0][0]
                head = models.index(name_of_head) if name_of_head in models else None
                quality = auroc(data.agree[:, head], predicted[:, head]) if head is not None else float("nan")
                lines.append(
                    f"| {name} | {target} | {quality:.2f} ({name_of_head}) | {np.median([r[6] for r in mine]):.3f} | "
                    f"{routed:.3f} | {plain:.3f} | {routed / plain:.3f} | {np.mean([r[2] for r in mine]):.2f} | "
                    f"{np.mean([r[3] for r in mine]):.2f} |"
                )
                print(lines[-1], flush=True)
    lines += ["", f"Wall time {time.time() - start:.0f} s on {args.workers} worker process(es)."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
