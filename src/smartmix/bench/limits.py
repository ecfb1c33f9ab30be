"""Hindsight limits: what a policy could reach on one batch if it knew every item's outcome in advance.

All three take the batch's per-item arrays (candidates cheapest first, the reference last) and return the
cheapest total cost that meets the target on the *realised* batch (or, for the LP mix, in expectation):

- :func:`lp_mix_cost`: the cheapest random mix of single models, knowing each model's true agreement rate
  on the batch and with free profiling — the ceiling of SMART's model mix;
- :func:`two_tier_cost`: one cheaper model answers every item and the items whose confidence is below a
  threshold also go to the reference; the threshold is the cheapest one, picked in hindsight, whose
  realised agreement reaches the target. :func:`best_two_tier_cost` takes the best first tier among the
  candidates (the cheapest one is usually it; on the llama datasets a mid-priced model is);
- :func:`floor_cost`: every item answered by its cheapest agreeing model, except that up to the allowed
  share of disagreements goes to the cheapest model where that saves the most: no method can go below it.

The first two know the truth for free. Their *learned* counterparts pay for what a valid method must learn,
and nothing more: :func:`learned_mix_cost` and :func:`learned_two_tier_cost` label a random sample of ``n``
items with the reference (and, for the mix, the cheaper models), set the mix or the threshold from **one**
one-sided Clopper–Pearson bound at level δ at the sample's typical outcome (not a lucky draw), and take the
best ``n`` on a grid in hindsight — no repeated looks, no δ split over models or looks, no margin for the
realised split, the best model picked in hindsight. They are what a valid method could reach if an oracle
told it the sample size; the gap from them to the free limits is the price of learning at all, the gap from
a method to them the price of not knowing the sample size in advance. (Where ties in the confidence block every threshold, the learned
two-tier can beat the free one: its random sample escalates part of a tie group.)
"""

from __future__ import annotations

import math

import numpy as np

from smartmix.mixing import mix_fractions
from smartmix.policies import Guarantee
from smartmix.stats import binomial_lower, binomial_upper

__all__ = [
    "required_agreeing",
    "lp_mix_cost",
    "two_tier_cost",
    "best_two_tier_cost",
    "floor_cost",
    "sample_sizes",
    "learned_mix_cost",
    "learned_two_tier_cost",
    "hindsight_costs",
]


def required_agreeing(n_items: int, target: float) -> int:
    """Fewest agreeing outputs meeting ``target`` (the policies' own rounding)."""
    return Guarantee(target).required_agreeing(n_items)


def lp_mix_cost(agree: np.ndarray, cost: np.ndarray, target: float) -> float:
    """Expected cost of the cheapest fractional mix meeting the target in expectation (free profiling)."""
    n = agree.shape[0]
    if n == 0:
        return 0.0
    rates = agree.mean(axis=0)
    unit = cost.mean(axis=0)
    per_item, _ = mix_fractions(unit, rates, required_agreeing(n, target) / n, 0.0)
    return float(per_item * n)


def two_tier_cost(agree: np.ndarray, cost: np.ndarray, confidence: np.ndarray, target: float) -> float:
    """Cheapest two-tier cascade (model 0 on every item, the reference on low-confidence items).

    Items whose confidence is below the threshold are escalated; ties are escalated together, so only cuts
    between distinct confidence values are thresholds. Unknown confidence (NaN) counts as the lowest.
    Returns inf when ``confidence`` is entirely unknown.
    """
    n = agree.shape[0]
    if n == 0:
        return 0.0
    conf = np.asarray(confidence, dtype=float)
    if np.all(np.isnan(conf)):
        return math.inf
    conf = np.where(np.isnan(conf), -np.inf, conf)
    need = required_agreeing(n, target)
    order = np.argsort(conf, kind="stable")
    sorted_conf = conf[order]
    cheap_agree = agree[order, 0].astype(np.int64)
    ref_cost = cost[order, -1]
    # Escalating the k least confident items: agreement = k + agreeing among the others.
    agreeing_kept = int(cheap_agree.sum()) - np.concatenate([[0], np.cumsum(cheap_agree)])
    agreeing = np.arange(n + 1) + agreeing_kept
    escalated_cost = np.concatenate([[0.0], np.cumsum(ref_cost)])
    # Valid cut points: k = 0, k = n, or between two distinct confidence values.
    cuts = np.zeros(n + 1, dtype=bool)
    cuts[0] = cuts[n] = True
    cuts[1:n] = sorted_conf[1:] > sorted_conf[:-1]
    ok = cuts & (agreeing >= need)
    base = float(cost[:, 0].sum())
    return base + float(escalated_cost[ok].min())


def best_two_tier_cost(agree: np.ndarray, cost: np.ndarray, score: np.ndarray, target: float) -> float:
    """The cheapest :func:`two_tier_cost` over the choice of first tier (each candidate with its own score)."""
    ref = agree.shape[1] - 1
    return min(
        (two_tier_cost(agree[:, [j, ref]], cost[:, [j, ref]], score[:, j], target) for j in range(ref)),
        default=math.inf,
    )


def floor_cost(agree: np.ndarray, cost: np.ndarray, target: float) -> float:
    """Per-item floor: cheapest agreeing model per item, the allowed disagreements spent where they save most."""
    n = agree.shape[0]
    if n == 0:
        return 0.0
    agreeing_cost = np.where(agree, cost, np.inf).min(axis=1)  # the reference always agrees: finite
    cheapest = cost.min(axis=1)
    allowed = n - required_agreeing(n, target)
    saving = np.sort(agreeing_cost - cheapest)[::-1]
    return float(agreeing_cost.sum() - saving[:allowed].sum())


def sample_sizes(n_items: int, first: int = 100, ratio: float = 1.25) -> list[int]:
    """The grid of sample sizes the learned limits choose from: geometric from ``first`` to half the batch."""
    sizes, n = [], float(first)
    while n <= n_items / 2:
        sizes.append(int(n))
        n *= ratio
    return sizes


def _first_failing_count(n: int, limit_rate: float, delta: float) -> int:
    """Fewest errors seen in ``n`` samples whose Clopper–Pearson upper bound exceeds ``limit_rate``
    (``n + 1`` if none does)."""
    lo, hi = 0, n + 1  # the answer lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if float(binomial_upper(mid, n, delta)) > limit_rate:
            hi = mid
        else:
            lo = mid + 1
    return lo


def learned_mix_cost(agree: np.ndarray, cost: np.ndarray, target: float, delta: float) -> float:
    """Expected cost of the cheapest mix learned from a random sample of ``n`` items (profiled by every model
    of the mix and counted as the reference's answers), with one lower bound at level δ per model taken at
    the sample's typical outcome (the true rate times ``n``), the best ``n`` in hindsight.

    Two shapes, the cheaper wins: one cheaper model plus the reference (chosen in hindsight, full δ, only
    those two profiled), or every model profiled with δ split over the cheaper ones.
    """
    n_items, m = agree.shape
    if n_items == 0:
        return 0.0
    need = required_agreeing(n_items, target)
    ref = m - 1
    rates = agree.mean(axis=0)
    unit = cost.mean(axis=0)
    best = float(unit[ref] * n_items)
    for n in sample_sizes(n_items):
        rest = n_items - n
        need_rest = max(0, need - n) / rest
        typical = np.round(rates[:ref] * n)
        lower_one = binomial_lower(typical, n, delta)
        lower_all = np.append(binomial_lower(typical, n, delta / max(1, ref)), 1.0)
        for j in range(ref):
            per_item, _ = mix_fractions(unit[[j, ref]], np.array([lower_one[j], 1.0]), need_rest, 0.0)
            best = min(best, float(n * (unit[j] + unit[ref]) + rest * per_item))
        per_item, _ = mix_fractions(unit, lower_all, need_rest, 0.0)
        best = min(best, float(n * unit.sum() + rest * per_item))
    return best


def learned_two_tier_cost(agree: np.ndarray, cost: np.ndarray, score: np.ndarray, target: float, delta: float) -> float:
    """Expected cost of the cheapest two-tier cascade whose threshold is learned from a random sample of
    ``n`` items, the best first tier and the best ``n`` in hindsight.

    The sampled items are answered by the reference (and by the first tier, which answers every item).
    Thresholds are tested from the strictest down in a fixed sequence, each with one Clopper–Pearson upper
    bound at level δ on the share of items the first tier keeps and gets wrong, taken at the sample's
    typical outcome (the true share times ``n``); the loosest threshold that passes is used on the rest.
    """
    n_items, m = agree.shape
    if n_items == 0:
        return 0.0
    ref = m - 1
    allowed = n_items - required_agreeing(n_items, target)
    best = float(cost[:, ref].sum())
    for j in range(ref):
        conf = np.asarray(score[:, j], dtype=float)
        if np.all(np.isnan(conf)):
            continue
        conf = np.where(np.isnan(conf), -np.inf, conf)
        by_conf = np.argsort(-conf, kind="stable")  # most confident first: keeping the top k
        sorted_conf = conf[by_conf]
        wrong_seen = np.concatenate([[0], np.cumsum(~agree[by_conf, j].astype(bool))])  # among the top k
        escalated_ref = np.concatenate([np.cumsum(cost[by_conf, ref][::-1])[::-1], [0.0]])  # items k.. escalated
        cut_at = np.ones(n_items + 1, dtype=bool)  # k = 0 .. n_items kept; only between distinct values
        cut_at[1:n_items] = sorted_conf[1:] < sorted_conf[:-1]
        cuts = np.flatnonzero(cut_at)
        base = float(cost[:, j].sum())
        ref_total = float(escalated_ref[0])
        for n in sample_sizes(n_items):
            # Fixed sequence from the strictest threshold: the bound grows with k, so the thresholds that
            # pass are exactly the cuts before the first one whose typical count reaches the failing count.
            fail = _first_failing_count(n, allowed / (n_items - n), delta)
            k_fail = int(np.searchsorted(np.round(wrong_seen * (n / n_items)), fail, side="left"))
            k = int(cuts[max(0, int(np.searchsorted(cuts, k_fail, side="left")) - 1)])
            sampled = n / n_items
            total = base + sampled * ref_total + (1.0 - sampled) * float(escalated_ref[k])
            best = min(best, total)
    return best


def hindsight_costs(
    agree: np.ndarray,
    cost: np.ndarray,
    score: np.ndarray | None,
    target: float,
    confidence: float | None = None,
) -> dict[str, float]:
    """The limits' costs for one batch, keyed ``lp-mix``, ``two-tier``, ``floor`` and, given the guarantee's
    ``confidence``, ``learned-mix`` and ``learned-two-tier``.

    The two-tier limits are left out (undefined, reported as "n/a") when no candidate has a score."""
    out = {"lp-mix": lp_mix_cost(agree, cost, target), "floor": floor_cost(agree, cost, target)}
    if score is not None and not np.isfinite(score[:, :-1]).any():
        score = None
    if score is not None:
        out["two-tier"] = best_two_tier_cost(agree, cost, score, target)
    if confidence is not None:
        delta = 1.0 - confidence
        out["learned-mix"] = learned_mix_cost(agree, cost, target, delta)
        if score is not None:
            out["learned-two-tier"] = learned_two_tier_cost(agree, cost, score, target, delta)
    return out
