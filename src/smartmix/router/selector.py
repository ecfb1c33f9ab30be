"""Cost-aware selectors over predicted agreement probabilities (pure numpy functions).

``pred`` maps model -> predicted P(agrees with the reference) per prompt (arrays of equal length, or
scalars); ``costs`` maps model -> price per request (a scalar, or one value per prompt). The reference
is the priciest model unless named; it is treated as agreeing with itself (probability 1) whatever
``pred`` says, and is added if ``pred`` lacks it. Every selector returns one model name per prompt as a
numpy array of ``str``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from smartmix.errors import ConfigError, PriceError, UnknownModelError

__all__ = [
    "cost_agreement_hull",
    "expected_agreement",
    "expected_cost",
    "select_budget",
    "select_threshold",
    "tune_lambda",
]


def _arrays(
    pred: Mapping[str, ArrayLike], costs: Mapping[str, ArrayLike], reference: str | None
) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Models (cheapest first), P [models, n], C [models, n], index of the reference."""
    if not pred:
        raise ConfigError("No predictions given to the router's selector.")
    missing = [m for m in pred if m not in costs]
    if missing:
        raise PriceError(
            f"No price for {', '.join(missing)}; pass costs for every model the router may pick."
        )
    lengths = {np.size(v) for v in pred.values() if np.ndim(v) > 0}
    if len(lengths) > 1:
        raise ConfigError(
            f"Predictions have different lengths {sorted(lengths)}; expected one value per prompt."
        )
    n = lengths.pop() if lengths else 1
    for m in pred:
        if np.ndim(costs[m]) > 0 and np.size(costs[m]) != n:
            raise ConfigError(f"costs['{m}'] has {np.size(costs[m])} values for {n} prompts.")
    names = list(pred)
    if reference is None:
        reference = max(costs, key=lambda m: float(np.mean(costs[m])))
    elif reference not in costs:
        raise UnknownModelError(f"Reference '{reference}' has no price in costs ({', '.join(costs)}).")
    if reference not in names:
        names.append(reference)
    names.sort(key=lambda m: float(np.mean(costs[m])))
    P = np.empty((len(names), n))
    C = np.empty((len(names), n))
    for i, m in enumerate(names):
        P[i] = 1.0 if m == reference else np.broadcast_to(np.asarray(pred[m], dtype=np.float64), (n,))
        C[i] = np.broadcast_to(np.asarray(costs[m], dtype=np.float64), (n,))
    if not np.isfinite(C).all() or (C < 0).any():
        raise PriceError("Prices must be finite and non-negative.")
    if np.isnan(P).any():
        raise ConfigError("Predicted probabilities contain NaN.")
    return names, P, C, names.index(reference)


def cost_agreement_hull(
    rates: Mapping[str, float], costs: Mapping[str, float], reference: str | None = None
) -> list[str]:
    """Models on the upper concave hull of (cost, agreement rate), cheapest first, ending at the reference.

    These are the models worth routing to: a model below the hull agrees less, at its price, than a random
    mix of its two hull neighbours (e.g. the cheapest model and the reference) at the same mean cost.
    The reference (default: the priciest model) counts as agreement 1.0 whatever ``rates`` says; models
    dearer than it are dropped; among equally priced models only the best rate is kept.
    """
    if not rates:
        raise ConfigError("No agreement rates given.")
    missing = [m for m in rates if m not in costs]
    if missing:
        raise PriceError(f"No price for {', '.join(missing)}.")
    if reference is None:
        reference = max(rates, key=lambda m: float(costs[m]))
    pts = {m: (float(costs[m]), 1.0 if m == reference else float(rates[m])) for m in rates}
    pts[reference] = (float(costs[reference]), 1.0)
    c_ref = pts[reference][0]
    order = sorted(
        (m for m in pts if pts[m][0] <= c_ref and (m == reference or pts[m][0] < c_ref)),
        key=lambda m: (pts[m][0], -pts[m][1], m != reference),
    )
    hull: list[str] = []
    for m in order:
        x, y = pts[m]
        if hull and pts[hull[-1]][0] == x:  # same price: the first (best) one stays
            continue
        if hull and y <= pts[hull[-1]][1]:  # costs more, agrees no more
            continue
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = pts[hull[-2]], pts[hull[-1]]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:  # middle point on or under the chord
                hull.pop()
            else:
                break
        hull.append(m)
    return hull


def _names(names: list[str], idx: np.ndarray) -> np.ndarray:
    return np.asarray(names, dtype=str)[idx]


def select_threshold(
    pred: Mapping[str, ArrayLike],
    costs: Mapping[str, ArrayLike],
    theta: float,
    *,
    reference: str | None = None,
) -> np.ndarray:
    """Per prompt, the cheapest model whose predicted agreement is >= ``theta``; the reference if none.

    Among equally cheap eligible models the one with the higher prediction wins.
    """
    names, P, C, ref = _arrays(pred, costs, reference)
    eligible = P >= theta
    eligible[ref] = True
    key_cost = np.where(eligible, C, np.inf)
    cheapest = key_cost.min(axis=0)
    tied = eligible & (key_cost <= cheapest)
    idx = np.argmax(np.where(tied, P, -np.inf), axis=0)
    return _names(names, idx)


def _choose_lagrangian(P: np.ndarray, C: np.ndarray, lam: float) -> np.ndarray:
    """argmax_m P - lam * C per prompt; ties go to the cheaper model (rows are sorted by cost)."""
    if math.isinf(lam):
        key_cost = C
        cheapest = key_cost.min(axis=0)
        return np.argmax(np.where(key_cost <= cheapest, P, -np.inf), axis=0)
    utility = P - lam * C
    best = utility.max(axis=0)
    tol = 1e-12 * np.maximum(1.0, np.abs(best))
    ok = utility >= best - tol
    # first (cheapest) row among the maximisers; equal-cost rows: the higher P (already maximal)
    return np.argmax(ok, axis=0)


def tune_lambda(
    pred: Mapping[str, ArrayLike],
    costs: Mapping[str, ArrayLike],
    budget: float,
    *,
    reference: str | None = None,
    iterations: int = 100,
) -> float:
    """Smallest lambda >= 0 whose Lagrangian choice (argmax P - lambda*cost) keeps mean cost <= ``budget``.

    Use it on held-out prompts' predictions, then route new prompts with ``select_budget(..., lam=...)``.
    Returns 0.0 if the budget is not binding and ``math.inf`` if even the cheapest model on every prompt
    exceeds it (routing then picks the cheapest model everywhere).
    """
    names, P, C, _ = _arrays(pred, costs, reference)
    if not math.isfinite(budget):
        raise ConfigError(f"Budget must be a finite number, got {budget}.")

    def mean_cost(lam: float) -> float:
        idx = _choose_lagrangian(P, C, lam)
        return float(C[idx, np.arange(C.shape[1])].mean())

    if mean_cost(0.0) <= budget:
        return 0.0
    if mean_cost(math.inf) > budget * (1 + 1e-12):
        return math.inf
    # Any lambda above max P-gap / min positive cost-gap already picks the cheapest model everywhere.
    gaps = np.abs(np.diff(np.unique(C)))
    gaps = gaps[gaps > 0]
    hi = 2.0 / (gaps.min() if gaps.size else 1.0)
    while mean_cost(hi) > budget:
        hi *= 4.0
    lo = hi
    while lo > 1e-300 and mean_cost(lo) <= budget:
        lo /= 16.0
    for _ in range(iterations):  # invariant: cost(lo) > budget >= cost(hi)
        mid = math.sqrt(lo * hi)
        if mean_cost(mid) <= budget:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1 + 1e-9:
            break
    return hi


def select_budget(
    pred: Mapping[str, ArrayLike],
    costs: Mapping[str, ArrayLike],
    budget: float | None = None,
    *,
    lam: float | None = None,
    reference: str | None = None,
) -> np.ndarray:
    """Per prompt, argmax over models of predicted agreement - lambda * cost.

    With ``lam`` given (tuned on held-out prompts by :func:`tune_lambda`), ``budget`` is not needed and each
    prompt is routed on its own. Without it, lambda is tuned on these prompts (batch routing), so their
    mean cost is <= ``budget`` (unless even the cheapest model everywhere costs more; then that is returned).
    """
    if lam is None:
        if budget is None:
            raise ConfigError("select_budget needs a budget or a tuned lam.")
        lam = tune_lambda(pred, costs, budget, reference=reference)
    if lam < 0 or math.isnan(lam):
        raise ConfigError(f"lambda must be >= 0, got {lam}.")
    names, P, C, _ = _arrays(pred, costs, reference)
    return _names(names, _choose_lagrangian(P, C, lam))


def expected_agreement(pred: Mapping[str, ArrayLike], choices: ArrayLike) -> np.ndarray:
    """Predicted agreement of each prompt's chosen model (models absent from ``pred``: 1.0, the reference)."""
    choices = np.asarray(choices, dtype=str)
    out = np.ones(choices.shape[0])
    for m, p in pred.items():
        sel = choices == m
        out[sel] = np.broadcast_to(np.asarray(p, dtype=np.float64), choices.shape)[sel]
    return out


def expected_cost(costs: Mapping[str, ArrayLike], choices: ArrayLike) -> np.ndarray:
    """Price of each prompt's chosen model."""
    choices = np.asarray(choices, dtype=str)
    out = np.full(choices.shape[0], np.nan)
    for m, c in costs.items():
        sel = choices == m
        out[sel] = np.broadcast_to(np.asarray(c, dtype=np.float64), choices.shape)[sel]
    if np.isnan(out).any():
        unknown = sorted(set(choices[np.isnan(out)].tolist()))
        raise PriceError(f"No price for {', '.join(unknown)}.")
    return out
