"""What ``smartmix bench`` prints: a short plain-text summary per suite that fits in 80 columns and reads
the same when piped (no colour codes, no table borders, no cell cut to one character). The wide tables go
to the report files only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from smartmix.bench.summary import Row

__all__ = ["WIDTH", "summary_lines", "best_guaranteed", "x", "DAGGER"]

WIDTH = 80
DAGGER = "†"  # marks a method without a statistical guarantee, in every table and plot


def x(value: float) -> str:
    """Savings as ``1.23x``; "n/a" where undefined (a limit that doesn't exist), "inf" for free."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}x"


def hit(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def best_guaranteed(rows: Sequence[Row]) -> Row | None:
    """The guaranteed method with the highest median savings among those that hit T in at least the promised
    share of trials (if none did, the best of all guaranteed methods, so the miss is shown)."""
    valid = [r for r in rows if r.kind == "valid" and not math.isnan(r.savings_median)]
    kept = [r for r in valid if r.hit_rate >= r.confidence] or valid
    return max(kept, key=lambda r: r.savings_median, default=None)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _recorded(rows: Sequence[Row]) -> list[str]:
    lines = [
        f"{'dataset':<16} {'N':>5} {'T':>4} {'best guaranteed':<17} {'hit':>4}  "
        f"{'BARGAIN':>7} {'hit':>4}  {'2-tier':>6} {'LPmix':>6}",
    ]
    for key in dict.fromkeys((r.dataset, r.n, r.target) for r in rows):
        cell = [r for r in rows if (r.dataset, r.n, r.target) == key]
        by = {r.method: r for r in cell}
        best = best_guaranteed(cell)
        peer = by.get("bargain")
        warn = "!" if best is not None and best.hit_rate < best.confidence else " "
        best_text = f"{_cut(best.method, 10):<10} {x(best.savings_median):>6}" if best else f"{'none':<17}"
        lines.append(
            f"{_cut(key[0], 16):<16} {key[1]:>5} {key[2]:>4g} {best_text} "
            f"{hit(best.hit_rate) if best else 'n/a':>4}{warn} "
            f"{x(peer.savings_median) if peer else 'n/a':>7} {hit(peer.hit_rate) if peer else 'n/a':>4}  "
            f"{x(by['limit:two-tier'].savings_median) if 'limit:two-tier' in by else 'n/a':>6} "
            f"{x(by['limit:lp-mix'].savings_median) if 'limit:lp-mix' in by else 'n/a':>6}"
        )
    lines.append("savings = reference-only cost / method cost (median over trials); hit = share of")
    lines.append("trials reaching T (! = below the promised share); n/a = undefined here.")
    return lines


def _adversarial(rows: Sequence[Row]) -> list[str]:
    lines = [f"{'method':<12} {'settings':>8} {'lowest hit (Wilson LB)':>23}  where"]
    for m in dict.fromkeys(r.method for r in rows):
        mrows = [r for r in rows if r.method == m and not math.isnan(r.hit_rate)]
        if not mrows:
            continue
        w = min(mrows, key=lambda r: r.hit_rate)
        where = f"N={w.n:,} T={w.target:g} {w.dataset} {w.scenario}"
        lines.append(
            _cut(f"{_name(w):<12} {len(mrows):>8} {w.hit_rate:>12.3f} ({w.hit_wilson_lower:.3f})  {where}", WIDTH)
        )
    return lines


def _paper(rows: Sequence[Row]) -> list[str]:
    from smartmix.backends.simulated import PAPER_REPORTED

    datasets = list(dict.fromkeys(r.dataset for r in rows))
    lines = [f"{'method':<12}" + "".join(f"{_cut(d, 10):>11}" for d in datasets) + f"{'lowest hit':>12}"]
    for m in dict.fromkeys(r.method for r in rows):
        mrows = [r for r in rows if r.method == m]
        avg = []
        for d in datasets:
            vals = [r.savings_median for r in mrows if r.dataset == d]
            avg.append(x(sum(vals) / len(vals)) if vals else "n/a")
        lines.append(f"{_name(mrows[0]):<12}" + "".join(f"{a:>11}" for a in avg) + f"{hit(min(r.hit_rate for r in mrows)):>12}")
    lines.append(f"{'paper says':<12}" + "".join(f"{x(PAPER_REPORTED.get(d, math.nan)):>11}" for d in datasets))
    lines.append("average median savings over T; the simulator is the paper's setting, not a")
    lines.append("reproduction of its figures (see paper.md).")
    return lines


def _pool(rows: Sequence[Row]) -> list[str]:
    lines: list[str] = []
    for pool in dict.fromkeys(r.dataset for r in rows):
        lines += _pool_table([r for r in rows if r.dataset == pool], pool)
    lines.append("cell: median savings and hit rate; CPU s: per trial, at the slowest T;")
    lines.append("* hindsight limit")
    return lines


def _pool_table(rows: Sequence[Row], pool: str) -> list[str]:
    targets = list(dict.fromkeys(r.target for r in rows))
    lines = [f"{_cut(pool, 13):<13}" + "".join(f"{'T=' + format(t, 'g'):>13}" for t in targets) + f"{'CPU s':>8}{'timeouts':>9}"]
    for m in dict.fromkeys(r.method for r in rows):
        mrows = {r.target: r for r in rows if r.method == m}
        first = next(iter(mrows.values()))
        limit = first.kind == "limit"
        cells = []
        for t in targets:
            r = mrows.get(t)
            if r is None:
                cells.append("")
            elif limit:
                cells.append(x(r.savings_median))
            else:
                cells.append(f"{x(r.savings_median)} {hit(r.hit_rate)}" if r.trials else "timed out")
        cpu = max((r.cpu_ms_per_trial for r in mrows.values() if not math.isnan(r.cpu_ms_per_trial)), default=math.nan)
        outs = "" if limit else str(sum(r.timed_out for r in mrows.values()))
        lines.append(
            f"{_cut(_name(first), 13):<13}" + "".join(f"{c:>13}" for c in cells)
            + f"{'' if math.isnan(cpu) else format(cpu / 1000, '.2f'):>8}{outs:>9}"
        )
    return lines


LIMIT_NAMES = {
    "limit:lp-mix": "LP mix*", "limit:two-tier": "2-tier*", "limit:floor": "floor*",
    "limit:learned-mix": "learned mix*", "limit:learned-two-tier": "learned 2t*",
}


def _name(row: Row) -> str:
    name = LIMIT_NAMES.get(row.method, row.method)
    return name + (DAGGER if row.kind == "baseline" else "")


def summary_lines(suite: str, rows: Sequence[Row], wall_s: float, report: str) -> list[str]:
    """The printed summary of one suite: a title line, the table, the legend, where the full report is."""
    settings = len({(r.dataset, r.scenario, r.n, r.target) for r in rows})
    lines = [_cut(f"== {suite}: {settings} settings, {wall_s:.0f} s. Full tables: {report}", WIDTH)]
    if suite in ("datasets", "small"):
        lines += _recorded(rows)
    elif suite == "adversarial":
        lines += _adversarial(rows)
    elif suite == "paper":
        lines += _paper(rows)
    elif suite == "pool":
        lines += _pool(rows)
    baselines = sorted({r.method for r in rows if r.kind == "baseline"})
    if baselines:
        lines.append(f"{DAGGER} no statistical guarantee: {', '.join(baselines)} (published baselines).")
    return [_cut(line, WIDTH) for line in lines]
