"""From trial records to report rows: one row per (setting, method) and one per hindsight limit."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from smartmix.bench.trials import LIMITS, Cell, TrialRecord
from smartmix.stats import wilson_lower

__all__ = ["Miss", "Row", "COLUMNS", "method_kind", "summarise", "misses"]


@dataclass
class Row:
    suite: str
    dataset: str
    scenario: str
    n: int
    target: float
    confidence: float
    method: str
    kind: str  # valid | baseline | peer | limit
    trials: int
    savings_median: float
    savings_p5: float
    savings_p10: float
    savings_p90: float
    efficiency_median: float  # savings / two-tier limit savings, per trial (NaN without the limit)
    hit_rate: float  # NaN for limits
    hit_wilson_lower: float
    agreement_mean: float
    agreement_min: float
    profiling_share: float  # profiling cost / method cost, mean over trials
    shares: str  # mean fraction of items per model, "model=0.123; ..."
    wall_ms_per_trial: float
    timed_out: int = 0  # trials stopped at the time limit (or not run after one was): not in the figures
    cpu_ms_per_trial: float = math.nan  # CPU time of the method per trial (wall time depends on the load)

    def as_dict(self) -> dict:
        return asdict(self)


COLUMNS = tuple(Row.__dataclass_fields__)


@dataclass(frozen=True)
class Miss:
    """A trial where a method's realised agreement fell below the target."""

    suite: str
    dataset: str
    scenario: str
    n: int
    target: float
    confidence: float
    method: str
    kind: str
    trial: int
    seed: int
    realised_agreement: float


def method_kind(method: str) -> str:
    from smartmix.bench.peers import PEERS
    from smartmix.policies import Policy

    if method in PEERS:
        return "peer"
    cls = Policy.registry.get(method)
    return "valid" if cls is None or getattr(cls, "valid", True) else "baseline"


def _shares_text(records: list[dict[str, float]], models: list[str] | None = None) -> str:
    totals: dict[str, float] = {}
    for shares in records:
        for name, value in shares.items():
            totals[name] = totals.get(name, 0.0) + value
    if not records:
        return ""
    order = models or list(totals)
    return "; ".join(f"{m}={totals[m] / len(records):.3f}" for m in order if m in totals and totals[m] > 0)


def _ratio(num: float, den: float) -> float:
    if den <= 0:
        return math.inf if num > 0 else math.nan
    return num / den


def summarise(cell: Cell, records: list[TrialRecord], models: list[str] | None = None) -> list[Row]:
    rows: list[Row] = []
    two_tier = {r.trial: _ratio(r.reference_cost, r.limits.get("two-tier", math.nan)) for r in records}
    base = dict(
        suite=cell.suite,
        dataset=cell.dataset,
        scenario=cell.label,
        n=cell.n,
        target=cell.target,
        confidence=cell.confidence,
    )
    for method in cell.methods:
        ran = [(r, r.methods[method]) for r in records if method in r.methods]
        if not ran:
            continue
        stopped = sum(1 for _, m in ran if m.timed_out)
        results = [(r, m) for r, m in ran if not m.timed_out]
        if not results:
            rows.append(_timed_out_row(base, method, stopped))
            continue
        savings = np.array([_ratio(m.reference_cost, m.cost) for _, m in results])
        realised = np.array([m.realised for _, m in results])
        hits = int(np.sum(realised >= cell.target - 1e-12))
        eff = np.array([_ratio(s, two_tier[r.trial]) for (r, _), s in zip(results, savings, strict=True)])
        eff = eff[np.isfinite(eff)] if cell.limits else np.array([])
        rows.append(
            Row(
                **base,
                method=method,
                kind=method_kind(method),
                trials=len(results),
                savings_median=float(np.median(savings)),
                savings_p5=float(np.quantile(savings, 0.05)),
                savings_p10=float(np.quantile(savings, 0.1)),
                savings_p90=float(np.quantile(savings, 0.9)),
                efficiency_median=float(np.median(eff)) if eff.size else math.nan,
                hit_rate=hits / len(results),
                hit_wilson_lower=wilson_lower(hits, len(results), 0.95),
                agreement_mean=float(realised.mean()),
                agreement_min=float(realised.min()),
                profiling_share=float(np.mean([_ratio(m.profiling_cost, m.cost) for _, m in results])),
                shares=_shares_text([m.shares for _, m in results], models),
                wall_ms_per_trial=1000.0 * float(np.mean([m.wall_s for _, m in results])),
                timed_out=stopped,
                cpu_ms_per_trial=1000.0 * float(np.mean([m.cpu_s for _, m in results])),
            )
        )
    if cell.limits:
        for limit in LIMITS:
            have = [r for r in records if limit in r.limits and math.isfinite(r.limits[limit])]
            if not have:
                continue
            savings = np.array([_ratio(r.reference_cost, r.limits[limit]) for r in have])
            eff = np.array([_ratio(s, two_tier[r.trial]) for r, s in zip(have, savings, strict=True)])
            eff = eff[np.isfinite(eff)]
            rows.append(
                Row(
                    **base,
                    method=f"limit:{limit}",
                    kind="limit",
                    trials=len(have),
                    savings_median=float(np.median(savings)),
                    savings_p5=float(np.quantile(savings, 0.05)),
                    savings_p10=float(np.quantile(savings, 0.1)),
                    savings_p90=float(np.quantile(savings, 0.9)),
                    efficiency_median=float(np.median(eff)) if eff.size else math.nan,
                    hit_rate=math.nan,
                    hit_wilson_lower=math.nan,
                    agreement_mean=math.nan,
                    agreement_min=math.nan,
                    profiling_share=0.0,
                    shares="",
                    wall_ms_per_trial=math.nan,
                )
            )
    return rows


def _timed_out_row(base: dict, method: str, stopped: int) -> Row:
    nan = math.nan
    return Row(
        **base, method=method, kind=method_kind(method), trials=0, savings_median=nan, savings_p5=nan,
        savings_p10=nan, savings_p90=nan, efficiency_median=nan, hit_rate=nan, hit_wilson_lower=nan,
        agreement_mean=nan, agreement_min=nan, profiling_share=nan, shares="", wall_ms_per_trial=nan,
        timed_out=stopped,
    )


def misses(cell: Cell, records: list[TrialRecord]) -> list[Miss]:
    out = []
    for r in records:
        for method, m in r.methods.items():
            if not m.timed_out and m.realised < cell.target - 1e-12:
                out.append(
                    Miss(
                        cell.suite, cell.dataset, cell.label, cell.n, cell.target, cell.confidence, method,
                        method_kind(method), r.trial, r.seed, m.realised,
                    )
                )
    return out
