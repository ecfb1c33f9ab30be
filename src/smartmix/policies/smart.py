"""SMART (Jo & Trummer, 2024) with every statistical step made valid.

Profiling walks the batch in one uniformly random order, 10 items at a time, calling the reference and
the candidate models still in play. At planned looks (:class:`~smartmix.stats.LookSchedule`) each model gets
an exact hypergeometric lower bound on its agreement over the items not yet profiled, at a share of δ fixed
before any data is seen. Profiling may stop at any look for any reason, so the three methods differ only in
*when* they stop and *what* they apply to the rest:

- ``exhaustive``: SMART's rule — stop when the cheapest model not yet ruled out is certified;
- ``efficient``: stop as soon as more profiling is not expected to pay for itself (look-ahead on costs);
- ``mix``: like ``efficient``, but the rest is split among models by the model-mix program, with δ's
  assignment share covering the random split.

Profiled items are answered by the reference and count as agreeing; the guarantee is on the realised
agreement over the whole batch.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from smartmix.mixing import mix_unit_cost, solve_mix
from smartmix.policies.base import Certificate, Plan, Policy, ProfileBatch
from smartmix.stats import (
    DeltaBudget,
    LookSchedule,
    approx_lower,
    approx_upper,
    hypergeom_lower,
    rest_agreeing_lower,
    split_lower,
    split_margin_estimate,
)


class Profiler(Policy):
    """Shared profiling state: random order, planned looks, per-model counts, fees and certified bounds."""

    assignment_share: ClassVar[float] = 0.0  # fraction of δ kept for the random split of the rest
    first_look: ClassVar[int] = 100
    look_ratio: ClassVar[float] = 1.5

    def __init__(self, spec):
        super().__init__(spec)
        n_items = spec.n_items
        self.order = self.rng.permutation(n_items)
        self.schedule = self._make_schedule()
        self.budget = DeltaBudget(
            spec.guarantee.delta,
            n_models=len(spec.candidates),
            n_looks=self.schedule.count,
            assignment=self.assignment_share * spec.guarantee.delta,
        )
        n_models = len(spec.models)
        self.n = 0
        self.draws = np.zeros(n_models, dtype=np.int64)
        self.successes = np.zeros(n_models, dtype=np.int64)
        self.fees = np.zeros(n_models)
        # Certification may start after a pilot sample that chose what to certify: only items profiled from
        # position ``cert_start`` on enter the bounds, as a sample from the items after the pilot.
        self.cert_start = 0
        self.cert_draws = np.zeros(n_models, dtype=np.int64)
        self.cert_successes = np.zeros(n_models, dtype=np.int64)
        self.k_lower = np.full(n_models, -1, dtype=np.int64)  # certified lower bound on the batch count
        self.k_lower_draws = np.zeros(n_models, dtype=np.int64)
        self.k_lower_successes = np.zeros(n_models, dtype=np.int64)
        self.active: list[int] = list(spec.candidates)
        self.looks: list[dict] = []
        self.stopped = n_items == 0

    def _make_schedule(self) -> LookSchedule:
        return LookSchedule(self.spec.n_items, first=self.first_look, ratio=self.look_ratio, step=self.spec.batch_size)

    # -- the loop --------------------------------------------------------------------------------
    def next_batch(self) -> ProfileBatch | None:
        if self.stopped or self.n >= self.spec.n_items:
            return None
        end = min(self.n + self.spec.batch_size, self.schedule.next_size(self.n) or self.spec.n_items)
        models = tuple(sorted(self.active)) + (self.spec.reference,)
        return ProfileBatch(self.order[self.n : end], models)

    def observe(
        self, batch: ProfileBatch, agree: np.ndarray, cost: np.ndarray, score: np.ndarray | None = None
    ) -> None:
        self.record_scores(batch, agree, score)
        k = len(batch.items)
        certifying = self.n >= self.cert_start  # batches never straddle a look, so never the pilot's end
        for j, m in enumerate(batch.models):
            agreeing = int(np.count_nonzero(agree[:, j]))
            self.draws[m] += k
            self.successes[m] += agreeing
            self.fees[m] += float(np.sum(cost[:, j]))
            if certifying:
                self.cert_draws[m] += k
                self.cert_successes[m] += agreeing
        self.n += k
        if self.n >= self.spec.n_items:
            self.stopped = True
        elif self.n in self.schedule.sizes:
            self._certify(self.active)
            self.looks.append(self._look_record())
            if self.decide():
                self.stopped = True

    def record_scores(self, batch: ProfileBatch, agree: np.ndarray, score: np.ndarray | None) -> None:
        """Hook for policies that learn from per-item outcomes, not only counts."""

    def _certify(self, models: list[int]) -> None:
        alpha = self.budget.per_look
        population = self.spec.n_items - self.cert_start
        for m in models:
            if self.cert_draws[m] == 0:
                continue
            self.k_lower[m] = hypergeom_lower(int(self.cert_successes[m]), int(self.cert_draws[m]), population, alpha)
            self.k_lower_draws[m] = self.cert_draws[m]
            self.k_lower_successes[m] = self.cert_successes[m]

    def _look_record(self) -> dict:
        return {
            "profiled": self.n,
            "active": [self.spec.models[m] for m in self.active],
            "bounds": {self.spec.models[m]: round(self.rest_lower(m), 6) for m in self.spec.candidates if self.k_lower[m] >= 0},
        }

    def decide(self) -> bool:
        """Called at each look: return True to stop profiling."""
        raise NotImplementedError

    # -- quantities --------------------------------------------------------------------------------
    @property
    def rest(self) -> int:
        return self.spec.n_items - self.n

    def need(self, n: int | None = None) -> int:
        """Agreeing answers the not-yet-profiled items must supply."""
        n = self.n if n is None else n
        return self.spec.guarantee.required_agreeing(self.spec.n_items) - n

    def rest_lower_count(self, m: int, n: int | None = None) -> int:
        """Certified count of items model ``m`` agrees on among those left after ``n`` profiled (default: now)."""
        n = self.n if n is None else n
        rest = self.spec.n_items - n
        if m == self.spec.reference or rest <= 0:
            return max(rest, 0)
        if self.k_lower[m] < 0:
            return 0
        population = self.spec.n_items - self.cert_start
        return rest_agreeing_lower(
            int(self.k_lower[m]), int(self.k_lower_successes[m]), int(self.k_lower_draws[m]), n - self.cert_start, population
        )

    def rest_lower(self, m: int, n: int | None = None) -> float:
        """Certified agreement of model ``m`` over the items left after ``n`` profiled, as a fraction."""
        rest = self.spec.n_items - (self.n if n is None else n)
        return self.rest_lower_count(m, n) / rest if rest > 0 else 1.0

    def unit_cost(self, m: int) -> float:
        """Mean fee per item of model ``m`` over the items *it* processed."""
        return float(self.fees[m] / self.draws[m]) if self.draws[m] else math.inf

    def rate(self, m: int) -> float:
        return float(self.successes[m] / self.draws[m]) if self.draws[m] else 0.0

    def unit_costs(self) -> np.ndarray:
        costs = np.array([self.unit_cost(m) for m in range(len(self.spec.models))])
        # A model never profiled has no cost estimate: it can't be planned for.
        return np.where(np.isfinite(costs), costs, np.inf)

    # -- the plan ----------------------------------------------------------------------------------
    def choose(self) -> np.ndarray:
        """Counts of remaining items per model (sum = rest)."""
        raise NotImplementedError

    def margin_items(self, counts: np.ndarray) -> float:
        return 0.0

    def plan(self) -> Plan:
        spec = self.spec
        counts = self.choose() if self.rest > 0 else np.zeros(len(spec.models), dtype=int)
        assignment = np.full(spec.n_items, spec.reference, dtype=np.int64)
        profiled = np.zeros(spec.n_items, dtype=bool)
        profiled[self.order[: self.n]] = True
        rest_items = self.rng.permutation(self.order[self.n :])
        start = 0
        for m, k in enumerate(counts):
            assignment[rest_items[start : start + k]] = m
            start += k
        return Plan(assignment, profiled, self.certificate(counts))

    def certificate(self, counts: np.ndarray) -> Certificate:
        spec = self.spec
        names = spec.models
        used = [m for m in range(len(names)) if counts[m] > 0]
        shares = {names[m]: float(counts[m]) / spec.n_items for m in used}
        shares[names[spec.reference]] = shares.get(names[spec.reference], 0.0) + self.n / spec.n_items
        margin = self.margin_items(counts)
        certified = float(sum(self.rest_lower(m) * counts[m] for m in used))
        return Certificate(
            method=self.name,
            target=spec.guarantee.target,
            confidence=spec.guarantee.confidence,
            valid=self.valid,
            n_items=spec.n_items,
            profiled=self.n,
            bounds={names[m]: self.rest_lower(m) for m in spec.candidates if self.k_lower[m] >= 0},
            shares=shares,
            margin=margin / self.rest if self.rest else 0.0,
            details={
                "bound": "exact hypergeometric lower bound (sampling without replacement) at planned looks",
                "looks_planned": list(self.schedule.sizes),
                "alpha_per_bound": self.budget.per_look,
                "delta_split": {"models": self.budget.delta - self.budget.assignment, "assignment": self.budget.assignment},
                "required_agreeing": spec.guarantee.required_agreeing(spec.n_items),
                "certified_agreeing": self.n + certified - margin,
                "unit_costs": {names[m]: self.unit_cost(m) for m in range(len(names)) if self.draws[m]},
                "looks": self.looks,
            },
        )


class Exhaustive(Profiler):
    """SMART's profiling rule with valid bounds: profile until the cheapest model not ruled out is certified."""

    name = "exhaustive"

    def __init__(self, spec):
        super().__init__(spec)
        self.invalid: set[int] = set()

    def decide(self) -> bool:
        need_frac = self.need() / self.rest
        alpha = self.budget.per_look
        for m in list(self.active):
            upper = approx_upper(self.rate(m), int(self.draws[m]), self.spec.n_items, alpha)
            if upper < need_frac:
                self.invalid.add(m)
        satisfied = [m for m in self.spec.candidates if m not in self.invalid and self.rest_lower(m) >= need_frac]
        open_models = [m for m in self.spec.candidates if m not in self.invalid]
        if not open_models:
            return True
        cheapest_open = open_models[0]  # candidates are ordered cheapest first
        if satisfied and satisfied[0] == cheapest_open:
            return True
        cap = satisfied[0] if satisfied else len(self.spec.models)
        self.active = [m for m in open_models if m < cap and m not in satisfied]
        return not self.active

    def choose(self) -> np.ndarray:
        counts = np.zeros(len(self.spec.models), dtype=int)
        need_frac = self.need() / self.rest
        certified = [m for m in self.spec.candidates if self.rest_lower(m) >= need_frac]
        counts[certified[0] if certified else self.spec.reference] = self.rest
        return counts


class Efficient(Profiler):
    """Stop profiling once more of it is not expected to pay for itself; apply the cheapest certified model.

    At each look the policy compares the cost of stopping now with the projected cost of profiling up to
    each of the next few looks (profiling fees plus the plan those looks would allow, assuming the observed
    agreement rates hold), and drops models whose profiling does not pay. This replaces SMART's expected-cost
    pruning; like any stopping rule it leaves the guarantee intact.
    """

    name = "efficient"
    horizon: ClassVar[int] = 32

    def plan_unit_cost(self, n: int, lower: np.ndarray, costs: np.ndarray) -> float:
        rest = self.spec.n_items - n
        if rest <= 0:
            return 0.0
        need_frac = (self.spec.guarantee.required_agreeing(self.spec.n_items) - n) / rest
        ok = lower >= need_frac - 1e-12
        return float(costs[ok].min())

    def margin_fraction(self, rest: int) -> float:
        return 0.0

    def current_lower(self, n: int | None = None) -> np.ndarray:
        return np.array([self.rest_lower(m, n) for m in range(len(self.spec.models))])

    def projected_lower(self, kept: list[int], n_future: int) -> np.ndarray:
        lower = self.current_lower(n_future)
        alpha = self.budget.per_look
        rest = self.spec.n_items - n_future
        population = self.spec.n_items - self.cert_start
        for m in kept:
            draws = int(self.cert_draws[m]) + (n_future - max(self.n, self.cert_start))
            p = self.rate(m)
            k_low = approx_lower(p, draws, population, alpha) * population
            lower[m] = min(max((k_low - p * draws) / rest, 0.0), 1.0) if rest > 0 else 1.0
        return lower

    def projected_total(self, kept: list[int], costs: np.ndarray) -> float:
        """Cheapest projected cost of the rest if profiling goes on with ``kept`` (up to ``horizon`` looks)."""
        per_item_profiling = costs[self.spec.reference] + sum(costs[m] for m in kept)
        best = math.inf
        future = [s for s in self.schedule.sizes if s > self.n][: self.horizon]
        for n_future in future:
            rest = self.spec.n_items - n_future
            lower = self.projected_lower(kept, n_future)
            total = (n_future - self.n) * per_item_profiling + rest * self.plan_unit_cost(n_future, lower, costs)
            best = min(best, total)
        return best

    def decide(self) -> bool:
        costs = self.unit_costs()
        now = self.rest * self.plan_unit_cost(self.n, self.current_lower(), costs)
        kept = list(self.active)
        best = self.projected_total(kept, costs)
        while kept:
            trials = [(self.projected_total([k for k in kept if k != m], costs), m) for m in kept]
            value, drop = min(trials)
            if value >= best:
                break
            best = value
            kept.remove(drop)
        self.active = kept
        return not kept or best >= now

    def choose(self) -> np.ndarray:
        costs = self.unit_costs()
        lower = self.current_lower()
        counts = np.zeros(len(self.spec.models), dtype=int)
        need_frac = self.need() / self.rest
        ok = [m for m in range(len(self.spec.models)) if lower[m] >= need_frac - 1e-12 and np.isfinite(costs[m])]
        best = min(ok, key=lambda m: costs[m]) if ok else self.spec.reference
        counts[best] = self.rest
        return counts


class Mix(Efficient):
    """SMART-ModelMix made valid: the rest is split among models by the model-mix program.

    A fifth of δ is reserved for the random split; the rest is shared by the models' bounds. The split is
    uniformly random, never in contiguous blocks of the input order, so each model's agreeing answers on its
    share are hypergeometric: the plan holds when the sum of their exact lower quantiles (each at the split's
    δ over the number of cheaper models used) plus the reference's share reaches what the rest must supply.
    """

    name = "mix"
    assignment_share = 0.2
    max_rounds: ClassVar[int] = 40

    def margin_fraction(self, rest: int) -> float:
        return split_margin_estimate(rest, self.budget.assignment) / rest if rest > 0 else 0.0

    def plan_unit_cost(self, n: int, lower: np.ndarray, costs: np.ndarray) -> float:
        rest = self.spec.n_items - n
        if rest <= 0:
            return 0.0
        need_frac = (self.spec.guarantee.required_agreeing(self.spec.n_items) - n) / rest
        return mix_unit_cost(np.where(np.isfinite(costs), costs, 1e9), lower, need_frac, self.margin_fraction(rest))

    def split_margin(self, counts: np.ndarray) -> float:
        """Items by which the split may fall short of ``sum L_m k_m``: expectation minus exact quantile, per
        cheaper model given a share (zero when one model takes every remaining item)."""
        rest = self.rest
        if rest <= 0 or np.count_nonzero(counts) <= 1:
            return 0.0
        used = [m for m in np.flatnonzero(counts) if m != self.spec.reference]
        if not used:
            return 0.0
        alpha = self.budget.assignment / len(used)
        margin = 0.0
        for m in used:
            agreeing = self.rest_lower_count(m)
            margin += counts[m] * agreeing / rest - split_lower(agreeing, rest, int(counts[m]), alpha)
        return margin

    def choose(self) -> np.ndarray:
        costs = self.unit_costs()
        usable = np.isfinite(costs)
        lower = np.where(usable, self.current_lower(), 0.0)
        need = float(self.need())
        margin = self.margin_fraction(self.rest) * self.rest
        # The margin depends on the split it protects: solve, price the split exactly, and raise the margin
        # until the split chosen carries its own margin.
        for _ in range(self.max_rounds):
            counts = solve_mix(np.where(usable, costs, 1e9), lower, need, self.rest, margin).counts
            exact = self.split_margin(counts)
            if float(lower @ counts) - exact >= need - 1e-6:
                return counts
            margin = max(margin, exact) * 1.02 + 1.0
        counts = np.zeros(len(self.spec.models), dtype=int)
        counts[self.spec.reference] = self.rest
        return counts

    def margin_items(self, counts: np.ndarray) -> float:
        return self.split_margin(counts)
