"""Collect the 1,000-trial validity runs into one table: hit rate and its Wilson lower bound per method.

The runs (each writes its own folder under benchmarks/results/validity/; see the README there):

    smartmix bench --suite datasets --trials 1000 --methods exhaustive,efficient,paper --out .../datasets-single
    smartmix bench --suite datasets --trials 1000 --methods mix,cascade --out .../datasets-mix-cascade
    smartmix bench --suite adversarial --trials 1000 --methods cascade --out .../adversarial-cascade
    smartmix bench --suite adversarial --n 10000 --trials 1000 --methods ... --out .../adversarial-*-10k
    smartmix bench --suite adversarial --n 50000 --trials 1000 --methods exhaustive,efficient,mix --out .../adversarial-50k

Usage: python benchmarks/validity_summary.py [folder]   (default benchmarks/results/validity)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def load(folder: Path) -> pd.DataFrame:
    frames = []
    for csv in sorted(folder.glob("*/*.csv")):
        if csv.name.endswith("_misses.csv"):
            continue
        frame = pd.read_csv(csv)
        frame["run"] = csv.parent.name
        frames.append(frame[frame["kind"] != "limit"])
    if not frames:
        raise SystemExit(f"no result CSVs under {folder}: run the commands in this script's docstring first")
    return pd.concat(frames, ignore_index=True)


def summary(rows: pd.DataFrame) -> str:
    out = ["# Validity: 1,000-trial runs", ""]
    out += [
        "Share of trials whose realised agreement reached T (hit rate) and its Wilson 95% lower bound, "
        "worst setting per method and suite; δ = 0.05, so a valid method must reach 0.95. `paper` is the "
        "published SMART statistics (not valid), shown beside. Made by `python benchmarks/validity_summary.py`.",
        "",
        "| suite | N | method | kind | settings | trials per setting | worst hit rate | worst Wilson LB | settings below 0.95 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = ["suite", "n", "method", "kind"]
    for (suite, n, method, kind), g in rows.groupby(keys, sort=True):
        trials = "/".join(str(t) for t in sorted(g["trials"].unique()))
        below = int((g["hit_rate"] < 0.95).sum())
        out.append(
            f"| {suite} | {n:,} | {method} | {kind} | {len(g)} | {trials} | {g['hit_rate'].min():.3f} | "
            f"{g['hit_wilson_lower'].min():.3f} | {below} |"
        )
    out += ["", "## Every setting", ""]
    out += ["| suite | dataset | scenario | N | T | method | trials | hit rate | Wilson LB | median savings | mean agreement |"]
    out += ["| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows.sort_values(["suite", "dataset", "scenario", "n", "target", "method"], na_position="first").itertuples():
        scenario = "" if pd.isna(r.scenario) else r.scenario
        out.append(
            f"| {r.suite} | {r.dataset} | {scenario} | {r.n:,} | {r.target:g} | {r.method} | {r.trials} | "
            f"{r.hit_rate:.3f} | {r.hit_wilson_lower:.3f} | {r.savings_median:.2f}× | {r.agreement_mean:.4f} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "validity"
    text = summary(load(folder))
    (folder / "summary.md").write_text(text)
    print(text.split("## Every setting")[0])


if __name__ == "__main__":
    main()
