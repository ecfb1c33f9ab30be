"""What the cascade's pilot screening changes: the same seeded batches with and without it, paired.

Each batch (the bench's ``datasets`` bootstrap, as in ``cascade_eval.py``) runs ``cascade`` twice: as shipped,
and with ``screen_share = 1`` (every pilot model answers the whole pilot, the behaviour before screening).
One row per setting: both medians, the median of the per-batch ratio, its extremes, and both hit rates.

    python benchmarks/pilot_screen.py --n 10000,20000,50000 --targets 0.8,0.9,0.95 --trials 30 \
        --out benchmarks/results/cascade/pilot_screen.md
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_eval import ROOT, _batch, _code_version, _init  # noqa: E402

from smartmix.core.offline import simulate  # noqa: E402
from smartmix.policies import Guarantee  # noqa: E402
from smartmix.policies.scorefirst import ScoreFirstCascade  # noqa: E402

SHIPPED = ScoreFirstCascade.screen_share


def _run(job: tuple) -> tuple:
    setting, trials = job
    target = setting[3]
    rows = []
    for trial in trials:
        batch, score, seed, _ = _batch(setting, trial, 0)
        pair = []
        for share in (SHIPPED, 1.0):
            ScoreFirstCascade.screen_share = share
            out = simulate("cascade", batch.agree, batch.cost, batch.models, Guarantee(target, 0.95), seed=seed,
                           score=score)
            pair += [out.savings, out.hit(target)]
        ScoreFirstCascade.screen_share = SHIPPED
        rows.append(pair)
    return setting, rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="10000,20000,50000")
    ap.add_argument("--targets", default="0.8,0.9,0.95")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    paths = sorted(str(p) for p in (ROOT.parent / "shared" / "data").glob("*/test.jsonl"))
    names = [Path(p).parent.name for p in paths]
    settings = [("recorded", name, int(n), float(t), "recorded")
                for n in args.n.split(",") for name in names for t in args.targets.split(",")]
    version, start = _code_version(), time.time()
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(paths,)) as pool:
        results = list(pool.map(_run, [(s, list(range(args.trials))) for s in settings]))
    command = "python benchmarks/pilot_screen.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Pilot screening: the cascade with and without it, on the same batches", "",
        f"Command: `{command}`", "",
        f"Code version: `{version}`; {args.trials} trials per setting; δ = 0.05; wall {time.time() - start:.0f} s.",
        "Without = `screen_share = 1` (every pilot model answers the whole pilot). Ratio = with ÷ without, per batch.",
        "", "| set | n | T | median with | median without | median ratio | min ratio | max ratio | hit with | hit without |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for setting, rows in results:
        r = np.array(rows, dtype=float)
        ratio = r[:, 0] / r[:, 2]
        lines.append(
            f"| {setting[1]} | {setting[2]} | {setting[3]} | {np.median(r[:, 0]):.3f} | {np.median(r[:, 2]):.3f} | "
            f"{np.median(ratio):.3f} | {ratio.min():.3f} | {ratio.max():.3f} | {r[:, 1].mean():.2f} | {r[:, 3].mean():.2f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
