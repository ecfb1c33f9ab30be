"""Collect the 1,000-trial validity runs into one table: hit rate and its Wilson lower bound per method.

The runs (each writes its own folder under benchmarks/results/validity/; see the README there):

    smartmix bench --suite datasets --trials 1000 --methods exhaustive,efficient,paper --out .../datasets-single
    smartmix bench --suite datasets --trials 1000 --methods mix,cascade --out .../datasets-mix-cascade
    smartmix bench --suite adversarial --trials 1000 --methods cascade --out .../adversarial-cascade
    smartmix bench --suite adversarial --n 10000 --trials 1000 --methods ... --out .../adversarial-*-10k
    smartmix bench --suite adversarial --n 50000 --trials 1000 --methods exhaustive,efficient,mix --out .../adversarial-50k
    python benchmarks/cascade_eval.py --n 50000 ... --methods efficient,mix --trials 1000 --out .../pools_n50000_screen*.md
      (the screen, off by default since; each report's header has its command and code version)

Usage: python benchmarks/validity_summary.py [folder]   (default benchmarks/results/validity)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd


def code_version(report: Path) -> str:
    """The code version a report's header names ("code abc1234" or "Code version: `abc1234`")."""
    text = report.read_text() if report.exists() else ""
    found = re.search(r"[Cc]ode(?: version:)? `?([0-9a-f]{7}[^`;,]*)", text)
    return found.group(1).strip() if found else "?"


def load(folder: Path) -> pd.DataFrame:
    frames = []
    for csv in sorted(folder.glob("*/*.csv")):  # smartmix bench runs, one folder each
        if csv.name.endswith("_misses.csv"):
            continue
        frame = pd.read_csv(csv)
        frame["run"] = csv.parent.name
        frame["code"] = code_version(csv.with_suffix(".md"))
        frames.append(frame[frame["kind"] != "limit"])
    for csv in sorted(folder.glob("*.csv")):  # benchmarks/cascade_eval.py runs: one file each
        raw = pd.read_csv(csv)
        pools = csv.stem.startswith("pools")
        frames.append(pd.DataFrame({
            "suite": "pools (cascade_eval)" if pools else "sets (cascade_eval)",
            "dataset": raw["set"],
            "scenario": raw["scores"],
            "n": raw["n"],
            "target": raw["target"],
            "method": raw["method"],
            "kind": "valid",
            "trials": raw["trials"],
            "hit_rate": raw["hit_rate"],
            "hit_wilson_lower": raw["wilson"],
            "savings_median": raw["median"],
            "agreement_mean": float("nan"),
            "run": csv.stem,
            "code": code_version(csv.with_suffix(".md")),
        }))
    if not frames:
        raise SystemExit(f"no result CSVs under {folder}: run the commands in this script's docstring first")
    return pd.concat(frames, ignore_index=True)


def summary(rows: pd.DataFrame) -> str:
    out = ["# Validity: 1,000-trial runs", ""]
    out += [
        "Share of trials whose realised agreement reached T (hit rate) and its Wilson 95% lower bound, "
        "worst setting per method and suite; δ = 0.05, so a valid method must reach 0.95. `paper` is the "
        "published SMART statistics (not valid), shown beside. `code`: the code version the run names (a method "
        "changed since then is measured again by a later run). Made by `python benchmarks/validity_summary.py`.",
        "",
        "| suite | N | method | kind | code | settings | trials per setting | worst hit rate | worst Wilson LB | settings below 0.95 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = ["suite", "n", "method", "kind", "code"]
    for (suite, n, method, kind, code), g in rows.groupby(keys, sort=True):
        trials = "/".join(str(t) for t in sorted(g["trials"].unique()))
        below = int((g["hit_rate"] < 0.95).sum())
        out.append(
            f"| {suite} | {n:,} | {method} | {kind} | {code} | {len(g)} | {trials} | {g['hit_rate'].min():.3f} | "
            f"{g['hit_wilson_lower'].min():.3f} | {below} |"
        )
    out += ["", "## Every setting", ""]
    out += ["| suite | dataset | scenario | N | T | method | code | trials | hit rate | Wilson LB | median savings | mean agreement |"]
    out += ["| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows.sort_values(["suite", "dataset", "scenario", "n", "target", "method"], na_position="first").itertuples():
        scenario = "" if pd.isna(r.scenario) else r.scenario
        out.append(
            f"| {r.suite} | {r.dataset} | {scenario} | {r.n:,} | {r.target:g} | {r.method} | {r.code} | {r.trials} | "
            f"{r.hit_rate:.3f} | {r.hit_wilson_lower:.3f} | {r.savings_median:.2f}× | "
            f"{'–' if pd.isna(r.agreement_mean) else f'{r.agreement_mean:.4f}'} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "validity"
    text = summary(load(folder))
    (folder / "summary.md").write_text(text)
    print(text.split("## Every setting")[0])


if __name__ == "__main__":
    main()
