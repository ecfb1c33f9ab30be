"""Compare a run at N = 50,000 with a baseline run of the datasets suite: each method's median savings now
against the baseline's, and ``mix`` / the cascades against the learned limits (computed by the datasets suite
on the same seeded batches: both the bench and ``benchmarks/cascade_eval.py`` draw trial i of a setting from
the same seed).

    python benchmarks/cascade_eval.py --n 50000 --targets 0.8,0.9,0.95 \\
        --methods exhaustive,efficient,mix,cascade,cascade-profiled --trials 20 \\
        --out benchmarks/results/cascade/n50000_current.md
    python benchmarks/compare_datasets.py --baseline benchmarks/results/datasets.csv \\
        --current benchmarks/results/cascade/n50000_current.csv --out benchmarks/results/cascade/n50000_vs_v0.1.md

``--current`` may also be a datasets-suite CSV (``smartmix bench --suite datasets``); limits come from it when
it has them, else from the baseline.

Version 0.1's ``cascade`` is the method now called ``cascade-profiled``; the score-first ``cascade`` is
compared with it too. The learned limits (src/smartmix/bench/limits.py) price one Clopper-Pearson bound at
δ with the sample size, model and mix shape chosen in hindsight: ``mix`` is set against the learned mix,
the cascades against the learned two-tier cascade.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from smartmix.bench.command import code_version

# the method of the baseline each current method is held to (0.1's cascade profiled before it applied)
BASELINE_OF = {"cascade-profiled": "cascade", "cascade": "cascade"}
LIMIT_OF = {"mix": "limit:learned-mix", "cascade": "limit:learned-two-tier",
            "cascade-profiled": "limit:learned-two-tier"}


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """One layout for both report kinds: dataset, target, method, savings_median."""
    if "savings_median" in frame.columns:
        return frame
    return frame.rename(columns={"set": "dataset", "median": "savings_median"})


def _median(frame: pd.DataFrame, dataset: str, target: float, method: str) -> float:
    row = frame[(frame.dataset == dataset) & (frame.target == target) & (frame.method == method)]
    return float(row.savings_median.iloc[0]) if len(row) else float("nan")


def compare(baseline: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    baseline, current = normalise(baseline), normalise(current)
    limits = current if current.method.str.startswith("limit:").any() else baseline
    rows = []
    methods = [m for m in current.method.unique() if not m.startswith("limit:")]
    for (dataset, target), _ in current.groupby(["dataset", "target"]):
        for method in methods:
            now = _median(current, dataset, target, method)
            before = _median(baseline, dataset, target, BASELINE_OF.get(method, method))
            limit = _median(limits, dataset, target, LIMIT_OF[method]) if method in LIMIT_OF else float("nan")
            rows.append({
                "dataset": dataset, "T": target, "method": method, "v0.1": before, "now": now,
                "now ÷ v0.1": now / before if before == before else float("nan"),
                "now ÷ learned limit": now / limit if limit == limit else float("nan"),
            })
    return pd.DataFrame(rows)


def render(table: pd.DataFrame, args: argparse.Namespace) -> str:
    def fmt(x: float, digits: int = 2) -> str:
        return "–" if x != x else f"{x:.{digits}f}"

    lines = [
        "# N = 50,000: the current methods against version 0.1 and the learned limits",
        "",
        f"Command: `python benchmarks/compare_datasets.py --baseline {args.baseline} --current {args.current} "
        f"--out {args.out}`",
        "",
        f"Made at code version `{code_version()}` from the two reports named; each names its own code version and "
        "command in its .md header. Median savings over the same seeded bootstrap batches (the current run's "
        "trials are the first trials of the baseline's). "
        "v0.1's `cascade` (profiled) is the baseline of both cascades.",
        "",
        "| dataset | T | method | v0.1 | now | now ÷ v0.1 | now ÷ learned limit |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.dataset} | {r.T:g} | {r.method} | {fmt(r[3])} | {fmt(r[4])} | {fmt(r[5])} | {fmt(r[6])} |"
        )
    lines += ["", "## Summary", ""]
    for method, group in table.groupby("method"):
        ratio = group["now ÷ v0.1"].dropna()
        line = f"- `{method}`: "
        if len(ratio):
            line += (f"≥ 0.99 of v0.1 in {int((ratio >= 0.99).sum())} of {len(ratio)} settings "
                     f"(range {ratio.min():.2f}–{ratio.max():.2f})")
        limit = group["now ÷ learned limit"].dropna()
        if len(limit):
            line += (f"; ≥ 0.95 of its learned limit in {int((limit >= 0.95).sum())} of {len(limit)} "
                     f"(range {limit.min():.2f}–{limit.max():.2f})")
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--current", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for path in (args.baseline, args.current):
        if not path.is_file():
            raise SystemExit(f"error: {path} not found: run `smartmix bench --suite datasets` first")
    table = compare(pd.read_csv(args.baseline), pd.read_csv(args.current))
    text = render(table, args)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)


if __name__ == "__main__":
    main()
