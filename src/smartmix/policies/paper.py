"""SMART's statistics exactly as the reference code publishes them — NOT a valid guarantee.

Kept as the baseline the benchmarks compare against (see ALGORITHMS.md §1, "weaknesses"):

- a two-sided Clopper–Pearson interval at the nominal confidence, checked every 10 items with no
  correction for the repeated looks, each model tested at the full error rate;
- satisfied when the lower end reaches T, ruled out when the upper end falls below T;
- the model mix: confidence levels per model from {γ, …, 0.99}, combinations accepted when the *product*
  of the levels is at least γ, a linear program that meets the adjusted target T′ with equality on
  *expected* agreement, unit costs divided by the global number of profiled items, and the remaining
  items split in contiguous blocks of the input order.

Large pools: the published search enumerates all 6^(M-1) combinations of levels (60 million for 11
candidates). Up to :data:`FULL_SEARCH_CANDIDATES` candidates (the paper's own pools) it runs as published.
Above that only the combinations with at most two models below "not used" are tried: the linear program's
optimum uses at most two models, and raising an unused model's level to "not used" keeps that optimum
feasible and the product rule satisfied, so the cheapest cost found is the same. The certificate says so
(``details["search"]`` and a warning).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from smartmix.mixing import mix_fractions
from smartmix.policies.smart import Profiler
from smartmix.stats import LookSchedule, clopper_pearson

FULL_SEARCH_CANDIDATES = 4  # 6^4 = 1,296 combinations, the paper's setting (four cheaper models)
PRUNED_BELOW_ONE = 2  # in the pruned search, at most this many models get a level below "not used"


def level_combinations(n_models: int, levels: list[float], gamma: float, below_one: int | None = None):
    """Level combinations in the published (itertools.product) order whose product is at least ``gamma``;
    with ``below_one``, only those with at most that many levels below 1.0 ("not used")."""
    for combo in itertools.product(levels, repeat=n_models) if below_one is None else _sparse(
        n_models, levels, below_one
    ):
        if np.prod(combo) >= gamma:
            yield combo


def _sparse(n_models: int, levels: list[float], below_one: int):
    """Every combination with at most ``below_one`` levels below 1.0, in itertools.product order."""

    def rec(prefix: tuple[float, ...], left: int):
        if len(prefix) == n_models:
            yield prefix
            return
        for lv in levels:
            if lv < 1.0 and left == 0:
                continue
            yield from rec((*prefix, lv), left - (lv < 1.0))

    yield from rec((), below_one)


class Paper(Profiler):
    name = "paper"
    valid = False

    def _make_schedule(self) -> LookSchedule:
        step = self.spec.batch_size
        return LookSchedule(self.spec.n_items, first=step, ratio=1.0, step=step)

    def __init__(self, spec):
        super().__init__(spec)
        self.invalid: set[int] = set()
        self.satisfied: set[int] = set()
        self.search: dict[str, float | int | bool] = {}
        self.search_warning = ""

    def _certify(self, models: list[int]) -> None:
        pass  # the published code keeps no certified bound: it recomputes intervals on demand

    def interval(self, m: int, confidence: float | None = None) -> tuple[float, float]:
        level = self.spec.guarantee.confidence if confidence is None else confidence
        return clopper_pearson(int(self.successes[m]), int(self.draws[m]), level)

    def rest_lower(self, m: int, n: int | None = None) -> float:
        if m == self.spec.reference:
            return 1.0
        return self.interval(m)[0] if self.draws[m] else 0.0

    def unit_cost(self, m: int) -> float:
        # Published behaviour: every model's fee is divided by the global number of profiled items.
        return float(self.fees[m] / self.n) if self.n and self.draws[m] else math.inf

    def decide(self) -> bool:
        target = self.spec.guarantee.target
        for m in list(self.active):
            lower, upper = self.interval(m)
            if not math.isnan(upper) and upper < target:
                self.invalid.add(m)
            elif lower >= target:
                self.satisfied.add(m)
        open_models = [m for m in self.spec.candidates if m not in self.invalid]
        if not open_models or open_models[0] in self.satisfied:
            return True
        cap = min(self.satisfied) if self.satisfied else len(self.spec.models)
        self.active = [m for m in open_models if m < cap and m not in self.satisfied]
        return not self.active

    def choose(self) -> np.ndarray:
        spec = self.spec
        rest = self.rest
        n_items = spec.n_items
        target_rest = (spec.guarantee.target * n_items - self.n) / rest
        gamma = spec.guarantee.confidence
        levels = list(np.linspace(gamma, 1.0, 5, endpoint=False)) + [1.0]  # 1.0 = "not used"
        candidates = [m for m in spec.candidates if self.draws[m]]
        costs = np.array([self.unit_cost(m) for m in range(len(spec.models))])
        costs[spec.reference] = self.unit_cost(spec.reference)
        best_cost, best_x = math.inf, None
        pruned = len(candidates) > FULL_SEARCH_CANDIDATES
        intervals: dict[tuple[int, float], float] = {}  # each bound once, not once per combination
        tried = 0
        for combo in level_combinations(len(candidates), levels, gamma, PRUNED_BELOW_ONE if pruned else None):
            tried += 1
            lower = np.zeros(len(spec.models))
            lower[spec.reference] = 1.0
            for m, level in zip(candidates, combo, strict=True):
                if level < 1.0:
                    if (m, level) not in intervals:
                        intervals[(m, level)] = self.interval(m, level)[0]
                    lower[m] = intervals[(m, level)]
            usable = np.isfinite(costs)
            cost, x = mix_fractions(np.where(usable, costs, 1e9), np.where(usable, lower, 0.0), target_rest, 0.0)
            if cost < best_cost:
                best_cost, best_x = cost, x
        self.search = {
            "combinations_tried": tried,
            "combinations_published": float(len(levels)) ** len(candidates),
            "pruned": pruned,
        }
        if pruned:
            self.search_warning = (
                f"paper: {len(candidates)} candidate models; the published search over "
                f"{len(levels)}^{len(candidates)} level combinations was pruned to the {tried:,} with at most "
                f"{PRUNED_BELOW_ONE} models used (same cheapest cost: the mix uses at most two models)"
            )
        counts = np.zeros(len(spec.models), dtype=int)
        if best_x is None:
            counts[spec.reference] = rest
            return counts
        counts[:] = np.rint(best_x * rest).astype(int)
        counts[spec.reference] += rest - counts.sum()
        return counts

    def plan(self):
        plan = super().plan()
        if self.search:
            plan.certificate.details["search"] = dict(self.search)
        if self.search_warning:
            plan.certificate.details.setdefault("warnings", []).append(self.search_warning)
        # Published behaviour: contiguous blocks of the remaining items in input order.
        rest_items = np.sort(self.order[self.n :])
        counts = np.bincount(plan.assignment[rest_items], minlength=len(self.spec.models))
        start = 0
        for m, k in enumerate(counts):
            plan.assignment[rest_items[start : start + k]] = m
            start += k
        return plan
