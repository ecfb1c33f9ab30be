"""The model-mix program: the cheapest split of the remaining items among models that still meets the target.

Given per-item unit costs c_m and certified lower bounds L_m on each model's agreement over the remaining
n items, find integer counts k_m (sum n) minimising sum c_m k_m such that

    sum L_m k_m  >=  need + margin(k)

where ``need`` is the number of agreeing answers the remaining items must supply and ``margin`` is the
random-split allowance (zero when a single model takes every item, since then no split happens).
The exact program is a small mixed integer linear program solved by HiGHS (:func:`solve_mix`);
:func:`mix_unit_cost` is its linear relaxation in closed form, used thousands of times by the
look-ahead that decides when to stop profiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


@dataclass(frozen=True)
class MixSolution:
    counts: np.ndarray  # items given to each model (ints, sum = n_rest)
    cost: float  # expected cost of the remaining items
    expected_agreeing: float  # sum L_m k_m: certified agreeing answers among the remaining items
    margin: float  # random-split allowance that was required (0 for a single model)
    feasible: bool

    @property
    def used(self) -> np.ndarray:
        return np.flatnonzero(self.counts > 0)


def solve_mix(
    unit_costs: np.ndarray, lower: np.ndarray, need: float, n_rest: int, margin: float
) -> MixSolution:
    """Cheapest integer split of ``n_rest`` items (see module doc). ``lower`` must contain a model with bound 1
    (the reference) for the program to be always feasible."""
    unit_costs = np.asarray(unit_costs, dtype=float)
    lower = np.asarray(lower, dtype=float)
    if n_rest <= 0:
        return MixSolution(np.zeros(len(lower), dtype=int), 0.0, 0.0, 0.0, True)
    best = _best_single(unit_costs, lower, need, n_rest)
    mixed = _solve_milp(unit_costs, lower, need + margin, n_rest, margin)
    if mixed is not None and (best is None or mixed.cost < best.cost - 1e-12):
        if np.count_nonzero(mixed.counts) > 1:
            return mixed
    if best is not None:
        return best
    if mixed is not None:
        return mixed
    return MixSolution(np.zeros(len(lower), dtype=int), math.inf, 0.0, margin, False)


def _best_single(unit_costs: np.ndarray, lower: np.ndarray, need: float, n_rest: int) -> MixSolution | None:
    ok = np.flatnonzero(lower * n_rest >= need - 1e-9)
    if ok.size == 0:
        return None
    m = ok[np.argmin(unit_costs[ok])]
    counts = np.zeros(len(lower), dtype=int)
    counts[m] = n_rest
    return MixSolution(counts, float(unit_costs[m] * n_rest), float(lower[m] * n_rest), 0.0, True)


def _solve_milp(
    unit_costs: np.ndarray, lower: np.ndarray, required: float, n_rest: int, margin: float
) -> MixSolution | None:
    m = len(lower)
    constraints = [
        LinearConstraint(np.ones((1, m)), n_rest, n_rest),
        LinearConstraint(lower.reshape(1, m), required, np.inf),
    ]
    res = milp(
        c=unit_costs,
        constraints=constraints,
        integrality=np.ones(m),
        bounds=Bounds(np.zeros(m), np.full(m, n_rest)),
        options={"disp": False, "mip_rel_gap": 1e-9},
    )
    if res.status != 0 or res.x is None:
        return None
    counts = np.rint(res.x).astype(int)
    agreeing = float(lower @ counts)
    if counts.sum() != n_rest or agreeing < required - 1e-6:
        return None
    return MixSolution(counts, float(unit_costs @ counts), agreeing, margin, True)


def mix_unit_cost(unit_costs: np.ndarray, lower: np.ndarray, need_fraction: float, margin_fraction: float) -> float:
    """Cost per remaining item of the cheapest fractional mix (the linear relaxation, in closed form)."""
    return mix_fractions(unit_costs, lower, need_fraction, margin_fraction)[0]


def mix_fractions(
    unit_costs: np.ndarray, lower: np.ndarray, need_fraction: float, margin_fraction: float
) -> tuple[float, np.ndarray]:
    """Cheapest fractional mix: (cost per remaining item, fraction per model); cost is inf if infeasible.

    A single model needs ``lower >= need_fraction``; a mix of two needs ``need_fraction + margin_fraction``.
    With two constraints the optimum of the relaxation uses at most two models, so enumerating pairs is exact.
    """
    unit_costs = np.asarray(unit_costs, dtype=float)
    lower = np.asarray(lower, dtype=float)
    fractions = np.zeros(len(lower))
    best = math.inf
    single = np.flatnonzero(lower >= need_fraction - 1e-12)
    if single.size:
        m = single[np.argmin(unit_costs[single])]
        best = float(unit_costs[m])
        fractions[m] = 1.0
    target = need_fraction + margin_fraction
    lo = lower[:, None]
    hi = lower[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        share_hi = (target - lo) / (hi - lo)
        pair_cost = unit_costs[:, None] + share_hi * (unit_costs[None, :] - unit_costs[:, None])
    pair_cost = np.where((lo < target) & (hi >= target) & (hi > lo), pair_cost, np.inf)
    i, j = np.unravel_index(np.argmin(pair_cost), pair_cost.shape)
    if pair_cost[i, j] < best:
        best = float(pair_cost[i, j])
        fractions[:] = 0.0
        fractions[j] = share_hi[i, j]
        fractions[i] = 1.0 - share_hi[i, j]
    return best, fractions
