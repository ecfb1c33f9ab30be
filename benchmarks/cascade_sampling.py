"""Where the score-first cascade's certification labels should go: the whole scored population, or its top.

The certificate of ``cascade`` rests on a uniform sample of the scored items (``certified_prefix``). A sample
drawn uniformly from the top r items of the score order only (r fixed without reading a label) is still
exchangeable within every prefix up to r, so the same exact test stays valid there and puts every label
where a certificate can use it; prefixes beyond r cannot be certified. This measures whether that pays, on
the recorded sets' bootstrap batches: for each batch the head is the one ``cascade`` itself chose, the
labels are 4·sqrt(N) (the labels rule), and each design's bill counts the head on every item and the
reference on every item not kept (labelled items included). The top fraction is swept in hindsight, so the
figures are an upper bound on what any label-free rule for r could reach.

    python benchmarks/cascade_sampling.py --n 2000 --targets 0.9,0.95 --trials 200 \
        --out benchmarks/results/cascade/sampling.md
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import cascade_eval  # noqa: E402

from smartmix.core.offline import simulate  # noqa: E402
from smartmix.policies import Guarantee  # noqa: E402
from smartmix.policies.prefix_test import certified_prefix  # noqa: E402

TOP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6)


def _one(setting, trial: int, seed0: int, delta: float) -> dict[float, tuple[float, bool]] | None:
    batch, score, seed, _ = cascade_eval._batch(setting, trial, seed0)
    _, _, n, target, _ = setting
    out = simulate("cascade", batch.agree, batch.cost, batch.models, Guarantee(target, 1 - delta), seed=seed, score=score)
    head_name = out.certificate.details.get("projection", {}).get("head")
    if head_name is None:
        return None
    head, ref = batch.models.index(head_name), len(batch.models) - 1
    rng = np.random.default_rng(seed + 1)
    s = np.where(np.isfinite(score[:, head]), score[:, head], -np.inf)
    order = np.lexsort((rng.random(n), -s))
    wrong = ~batch.agree[order, head]
    walk = rng.permutation(n)  # positions in the score order, in random order
    labels = int(round(4 * math.sqrt(n)))
    allowed = n - math.ceil(target * n - 1e-9)
    head_cost, ref_cost = float(batch.cost[:, head].mean()), float(batch.cost[:, ref].mean())
    results = {}
    for f in TOP_FRACTIONS:
        r = max(allowed, int(f * n))
        sampled = walk[walk < r][:labels]
        k = certified_prefix(sampled, wrong[sampled], r, allowed, delta)
        labelled_kept = int(np.sum(sampled < k))
        cost = n * head_cost + ref_cost * (n - k + labelled_kept)
        kept_wrong = int(wrong[:k].sum()) - int(wrong[sampled[sampled < k]].sum())
        results[f] = (n * ref_cost / cost, kept_wrong <= allowed)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--targets", default="0.9,0.95")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    paths = sorted(str(p) for p in (ROOT.parent / "shared" / "data").glob("*/test.jsonl"))
    cascade_eval._init(paths)
    sets = [Path(p).parent.name for p in paths]
    delta = 1 - args.confidence
    lines = [
        "# Score-first cascade: certification labels over the whole population or its top",
        "",
        f"Command: `python benchmarks/cascade_sampling.py --n {args.n} --targets {args.targets} "
        f"--trials {args.trials} --out {args.out}`",
        "",
        f"Code version: `{cascade_eval._code_version()}`; {args.trials} bootstrap batches per setting; δ = {delta:g}; "
        f"labels 4·√N = {round(4 * math.sqrt(args.n))}. Median savings (hit rate) per design: labels drawn "
        "uniformly from the top fraction of the score order shown (1.0 = the whole population, what `cascade` "
        "does).",
        "",
        "| set | T | " + " | ".join(f"top {f:g}" for f in TOP_FRACTIONS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in TOP_FRACTIONS) + " |",
    ]
    for name in sets:
        for target in (float(t) for t in args.targets.split(",")):
            setting = ("recorded", name, args.n, target, "recorded")
            rows = [r for r in (_one(setting, t, args.seed, delta) for t in range(args.trials)) if r is not None]
            cells = []
            for f in TOP_FRACTIONS:
                sav = [r[f][0] for r in rows]
                hit = np.mean([r[f][1] for r in rows]) if rows else float("nan")
                cells.append(f"{np.median(sav):.3f} ({hit:.2f})" if rows else "n/a")
            lines.append(f"| {name} | {target:g} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
