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
"""

from __future__ import annotations

import math

import numpy as np

from smartmix.mixing import mix_fractions
from smartmix.policies import Guarantee

__all__ = ["required_agreeing", "lp_mix_cost", "two_tier_cost", "best_two_tier_cost", "floor_cost", "hindsight_costs"]


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


def hindsight_costs(
    agree: np.ndarray, cost: np.ndarray, score: np.ndarray | None, target: float
) -> dict[str, float]:
    """The three limits' costs for one batch, keyed ``lp-mix``, ``two-tier``, ``floor`` (no two-tier without
    scores)."""
    out = {"lp-mix": lp_mix_cost(agree, cost, target), "floor": floor_cost(agree, cost, target)}
    if score is not None:
        out["two-tier"] = best_two_tier_cost(agree, cost, score, target)
    return out
