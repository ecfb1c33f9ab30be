"""Cascades on the cheap models' own confidence: ``cascade-profiled`` (guaranteed) and ``margin`` (published
baseline). ``cascade`` itself lives in :mod:`smartmix.policies.scorefirst`.

``cascade-profiled``: a chain of cheaper models ending at the reference. Each stage keeps its answer when its
confidence score is above the threshold; otherwise the item moves up the chain, and the reference answers
what no stage kept. Validity (see docs/guarantee.md):

- Items are profiled in a uniformly random order (sampling without replacement); on each profiled item
  every model of every chain still in play is called, and the reference's answer is final.
- For a chain and a threshold λ, let W_i(λ) = 1 if some stage would keep a disagreeing answer on item i
  (score above λ and answer ≠ reference). W is monotone in λ and bounds the item's actual disagreement, so
  the cascade's disagreements are at most D(λ), W's count over the whole batch (profiled items, answered by
  the reference, only help). The hypothesis H_λ: D(λ) > N − ⌈T·N⌉ is a statement about the batch alone; it
  is rejected when the exact hypergeometric upper bound on D(λ) from the profiled items is within the
  allowance. Because D and its sample count are monotone in λ, rejecting every λ down to the loosest one
  whose sample count is at most c* (the largest admissible count) *is* fixed-sequence testing from the
  strictest λ to the loosest, each at the full level: a false rejection needs the test at the strictest
  true null — one fixed point of the batch — to fail.
- δ is split before any data is seen: equally over the candidate chains and, per chain, over the planned
  looks. Chains and looks that are dropped keep their share unused.
- Profiling stops at a look when more of it is not expected to pay for itself (projected on the observed
  rates), like ``efficient``; chains whose profiling does not pay are dropped.

``margin`` (Ramírez, Birch & Titov, 2024): the small model answers every item; an item goes to the reference
when its confidence is below the running empirical p-quantile of the confidences seen so far, p set by a
per-item budget. No guarantee: it is the baseline for budgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from smartmix.policies.base import Certificate, Plan, Policy, ProfileBatch
from smartmix.policies.smart import Mix, Profiler
from smartmix.stats import DeltaBudget, LookSchedule, approx_upper, hypergeom_upper


def default_chains(n_candidates: int) -> list[tuple[int, ...]]:
    """Two-tier chains for every candidate, plus three-stage chains of neighbouring candidates."""
    chains = [(m,) for m in range(n_candidates)]
    chains += [(m, m + 1) for m in range(n_candidates - 1)]
    return chains


def largest_admissible(n: int, population: int, allowed: int, alpha: float, upper=hypergeom_upper) -> int:
    """Largest count s of sampled W-items whose upper bound on the batch count is <= allowed (-1: none).

    The upper bound grows with s, so binary search applies.
    """
    if n <= 0:
        return -1

    def ok(s: int) -> bool:
        return upper(s, n, population, alpha) <= allowed

    if not ok(0):
        return -1
    lo, hi = 0, n
    if ok(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _approx_upper_count(s: int, n: int, population: int, alpha: float) -> int:
    return int(math.ceil(approx_upper(s / n, n, population, alpha) * population))


@dataclass
class ChainCurve:
    """A chain's statistics on the certification sample, precomputed so any threshold is a lookup."""

    disagreement: np.ndarray  # per item, the highest score at which the chain keeps a wrong answer; sorted descending
    stage_keys: list[np.ndarray]  # per stage (the reference last): an item reaches it iff key <= threshold; sorted
    stage_cumcost: list[np.ndarray]  # cumulative cost of the stage over items in key order
    stage_total: list[float]
    n: int

    @classmethod
    def build(cls, chain: tuple[int, ...], reference: int, agree: np.ndarray, score: np.ndarray, cost: np.ndarray) -> ChainCurve:
        n = agree.shape[0]
        s = np.where(np.isnan(score), -np.inf, score)
        d = np.full(n, -np.inf)
        for m in chain:
            d = np.maximum(d, np.where(agree[:, m], -np.inf, s[:, m]))
        keys, cums, totals = [], [], []
        reach = np.full(n, -np.inf)  # an item reaches the next stage iff every earlier score is <= threshold
        for m in (*chain, reference):
            order = np.argsort(reach, kind="stable")
            c = np.nan_to_num(cost[order, m])
            keys.append(reach[order])
            cums.append(np.concatenate([[0.0], np.cumsum(c)]))
            totals.append(float(c.sum()))
            if m != reference:
                reach = np.maximum(reach, s[:, m])
        return cls(np.sort(d)[::-1], keys, cums, totals, n)

    def threshold(self, admissible: int) -> float:
        """Loosest threshold keeping at most ``admissible`` wrong answers on the sample (+inf: keep none)."""
        if admissible < 0:
            return math.inf
        if admissible >= self.n or not np.isfinite(self.disagreement[admissible]):
            return -math.inf
        return float(self.disagreement[admissible])

    def unit_cost(self, threshold: float) -> float:
        total = 0.0
        for keys, cum in zip(self.stage_keys, self.stage_cumcost, strict=True):
            reached = int(np.searchsorted(keys, threshold, side="right"))
            total += cum[reached]
        return total / max(1, self.n)


class FallbackMix(Mix):
    """The model mix a cascade falls back to when its pilot says no chain beats it.

    It sees the cascade's pilot (for unit costs and rates) but certifies only on the items after it, with
    the whole δ: the pilot chose *which* family to certify, so no share of δ is spent on the other.
    """

    first_look = 200
    look_ratio = 2.0
    screen_items = 0  # the cascade's pilot already chose this family

    def __init__(self, spec, pilot: int):
        super().__init__(spec)
        self.cert_start = pilot
        self.budget = DeltaBudget(
            spec.guarantee.delta,
            n_models=len(spec.candidates),
            n_looks=max(1, self.schedule.count - 1),
            assignment=self.assignment_share * spec.guarantee.delta,
        )

    def decide(self) -> bool:
        return False if self.n <= self.cert_start else super().decide()

    def projected_best(self) -> float:
        costs = self.unit_costs()
        return self.projected_total(list(self.active), costs)


class Cascade(Profiler):
    """Guaranteed cascade over a chain of cheaper models ending at the reference, profiled item by item.

    The cascade of version 0.1 (``cascade-profiled``), or the mix if cheaper; ``cascade`` itself scores every
    item first (:mod:`smartmix.policies.scorefirst`).
    """

    name = "cascade-profiled"
    first_look = 200
    look_ratio = 2.0
    horizon: ClassVar[int] = 32
    fallback_to_mix: ClassVar[bool] = True
    fallback_margin: ClassVar[float] = 0.8

    def __init__(self, spec):
        self.chains = [tuple(c) for c in (spec.option("chains") or default_chains(len(spec.candidates)))]
        super().__init__(spec)
        # The first look is a pilot: it only chooses the chain, and is never used to certify it. The chosen
        # chain then gets the whole δ, spent equally over the remaining looks.
        self.pilot = self.schedule.sizes[0] if self.schedule.count > 1 else 0
        self.budget = DeltaBudget(spec.guarantee.delta, n_models=1, n_looks=max(1, self.schedule.count - 1))
        self.live = list(range(len(self.chains)))
        self.active = sorted({m for c in self.chains for m in c})
        self._agree: list[np.ndarray] = []
        self._score: list[np.ndarray] = []
        self._cost: list[np.ndarray] = []
        self._stacked: tuple | None = None
        self._curves: dict[tuple[int, int], ChainCurve] = {}
        self._admissible: dict[tuple[int, bool], int] = {}
        self.no_scores: set[int] = set()
        self.fallback = FallbackMix(spec, self.pilot) if self.fallback_to_mix and self.pilot else None
        self.delegate: FallbackMix | None = None

    # -- delegation to the mix, when the pilot chose it ------------------------------------------------
    def next_batch(self) -> ProfileBatch | None:
        if self.delegate is not None:
            return self.delegate.next_batch()
        if self.stopped or self.n >= self.spec.n_items:
            return None
        if self.n == 0:  # one item prices every model before the allowance is checked
            return ProfileBatch(self.order[:1], tuple(sorted(self.active)) + (self.spec.reference,))
        if not self._within_allowance():
            self._fall_back(
                "profiling the cascade further could lift the bill above the "
                f"{self.profiling_allowance:.1%} profiling allowance over reference-only before a chain is "
                "certified to pay for it"
            )
            return None
        return super().next_batch()

    def _within_allowance(self) -> bool:
        """Never worse: the bill paid so far, the next batch with every model still profiled, and the rest
        answered by the plan certified now (the reference if none) stay under ``(1 + allowance) ×``
        reference-only."""
        costs = self.unit_costs()
        reference = self.spec.reference
        if not np.isfinite(costs[reference]):
            return True
        unit_now = costs[reference]
        if self.live and self.n > self.pilot:
            unit_now = min(unit_now, self.certified(self.live[0])[0])
        nxt = self.schedule.next_size(self.n) or self.spec.n_items
        chunk = max(0, min(self.n + self.spec.batch_size, nxt, self.spec.n_items) - self.n)
        per_item = costs[reference] + sum(costs[m] for m in self.active if np.isfinite(costs[m]))
        return chunk * (per_item - unit_now) <= self.profiling_room(unit_now)

    @property
    def needs_scores(self) -> bool:
        return True

    def record_scores(self, batch: ProfileBatch, agree: np.ndarray, score: np.ndarray | None) -> None:
        n_models = len(self.spec.models)
        full_agree = np.zeros((len(batch.items), n_models), dtype=bool)
        full_score = np.full((len(batch.items), n_models), np.nan)
        for j, m in enumerate(batch.models):
            full_agree[:, m] = agree[:, j]
            if score is not None:
                full_score[:, m] = score[:, j]
        self._agree.append(full_agree)
        self._score.append(full_score)
        self._stacked = None

    def observe(self, batch, agree, cost, score=None) -> None:
        if self.delegate is not None:
            self.delegate.observe(batch, agree, cost, score)
            return
        if self.fallback is not None and self.n < self.pilot:
            self.fallback.observe(batch, agree, cost, score)
        full_cost = np.full((len(batch.items), len(self.spec.models)), np.nan)
        for j, m in enumerate(batch.models):
            full_cost[:, m] = cost[:, j]
        self._cost.append(full_cost)
        super().observe(batch, agree, cost, score)

    def _certify(self, models: list[int]) -> None:
        pass  # cascades certify chains, not models

    # -- statistics -----------------------------------------------------------------------------------
    def _stack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._stacked is None:
            self._stacked = (np.concatenate(self._agree), np.concatenate(self._score), np.concatenate(self._cost))
        return self._stacked

    def curve(self, c: int, certification: bool) -> ChainCurve:
        """Chain ``c`` on the certification sample (items after the pilot) or on everything profiled."""
        key = (c, self.n if certification else -self.n)
        if key not in self._curves:
            agree, score, cost = self._stack()
            start = self.pilot if certification else 0
            self._curves = {k: v for k, v in self._curves.items() if abs(k[1]) == self.n}
            self._curves[key] = ChainCurve.build(
                self.chains[c], self.spec.reference, agree[start:], score[start:], cost[start:]
            )
        return self._curves[key]

    @property
    def allowed(self) -> int:
        """Disagreements the batch may contain: N − ⌈T·N⌉."""
        return self.spec.n_items - self.spec.guarantee.required_agreeing(self.spec.n_items)

    def admissible(self, n_profiled: int, exact: bool) -> int:
        """Largest admissible count of wrong-kept items in a certification sample of this size."""
        key = (n_profiled, exact)
        if key not in self._admissible:
            draws = n_profiled - self.pilot
            population = self.spec.n_items - self.pilot
            upper = hypergeom_upper if exact else _approx_upper_count
            self._admissible[key] = largest_admissible(draws, population, self.allowed, self.budget.per_look, upper)
        return self._admissible[key]

    def certified(self, c: int) -> tuple[float, float]:
        """(estimated unit cost, threshold) of chain ``c`` as certified now."""
        curve = self.curve(c, certification=True)
        threshold = curve.threshold(self.admissible(self.n, exact=True))
        return self.curve_cost(c, curve, threshold, certification=True), threshold

    def projected(self, c: int, n_future: int) -> float:
        """Unit cost chain ``c`` would be certified at with ``n_future`` profiled items, at today's rates."""
        # Planning uses every profiled item (pilot included): more data, and no certificate rests on it.
        curve = self.curve(c, certification=False)
        adm = self.admissible(n_future, exact=False)
        scaled = int(math.floor(adm * curve.n / max(1, n_future - self.pilot))) if adm >= 0 else -1
        return self.curve_cost(c, curve, curve.threshold(scaled), certification=False)

    def curve_cost(self, c: int, curve: ChainCurve, threshold: float, certification: bool) -> float:
        """Estimated cost per item of chain ``c`` at ``threshold``: every stage pays for the items it sees."""
        return curve.unit_cost(threshold)

    def models_of(self, chain_ids: list[int]) -> list[int]:
        return sorted({m for c in chain_ids for m in self.chains[c]})

    def projected_total(self, chain_ids: list[int]) -> float:
        if not chain_ids:
            return math.inf
        reference_cost = self.unit_cost(self.spec.reference)
        per_item = reference_cost + sum(self.unit_cost(m) for m in self.models_of(chain_ids))
        best = math.inf
        for n_future in [s for s in self.schedule.sizes if s > self.n][: self.horizon]:
            plan_cost = min([reference_cost] + [self.projected(c, n_future) for c in chain_ids])
            best = min(best, (n_future - self.n) * per_item + (self.spec.n_items - n_future) * plan_cost)
        return best

    def decide(self) -> bool:
        _, score, _ = self._stack()
        for c in list(self.live):  # a chain whose stages give no scores cannot keep any answer
            silent = [m for m in self.chains[c] if np.isnan(score[:, m]).all()]
            if silent:
                self.no_scores.update(silent)
                self.live.remove(c)
        if not self.live:
            return True
        if self.n == self.pilot:
            # Pilot look: keep the one chain with the best projected total (or hand over to the mix if it
            # projects cheaper); the data seen so far never enters the certificate.
            totals = {c: self.projected_total([c]) for c in self.live}
            best = min(totals, key=totals.__getitem__)
            # The pilot is small: hand over to the mix only when it is clearly cheaper.
            if self.fallback is not None and self.fallback.projected_best() < self.fallback_margin * totals[best]:
                self.delegate = self.fallback
                return False
            self.live = [best]
        else:
            reference_cost = self.unit_cost(self.spec.reference)
            now = self.rest * min(reference_cost, self.certified(self.live[0])[0])
            if self.projected_total(self.live) >= now:
                return True
        self.active = self.models_of(self.live)
        return False

    # -- the plan ------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        if self.delegate is not None:
            plan = self.delegate.plan()
            plan.certificate.method = self.name
            plan.certificate.details["fallback"] = "the pilot found the model mix cheaper than any cascade"
            plan.certificate.details["pilot_items"] = self.pilot
            return plan
        spec = self.spec
        assignment = np.full(spec.n_items, spec.reference, dtype=np.int64)
        profiled = np.zeros(spec.n_items, dtype=bool)
        profiled[self.order[: self.n]] = True
        chain: tuple[int, ...] = ()
        thresholds: tuple[float, ...] = ()
        estimate = None
        if self.rest > 0 and self.live and self.n > self.pilot:
            unit, threshold = self.certified(self.live[0])
            if threshold < math.inf and unit < self.unit_cost(spec.reference):
                chain = self.chains[self.live[0]]
                thresholds = tuple(threshold for _ in chain)
                estimate = unit
        return Plan(assignment, profiled, self._certificate(chain, thresholds, estimate), chain=chain, thresholds=thresholds)

    def _certificate(self, chain, thresholds, estimate) -> Certificate:
        spec = self.spec
        names = spec.models
        shares: dict[str, float] = {names[spec.reference]: self.n / spec.n_items}
        rest_share = self.rest / spec.n_items
        if chain:
            _, score, _ = self._stack()
            pending = np.ones(score.shape[0], dtype=bool)
            for m, t in zip(chain, thresholds, strict=True):
                keep = pending & (score[:, m] > t)
                shares[names[m]] = rest_share * float(keep.mean())
                pending &= ~keep
            shares[names[spec.reference]] += rest_share * float(pending.mean())
        else:
            shares[names[spec.reference]] += rest_share
        return Certificate(
            method=self.name,
            target=spec.guarantee.target,
            confidence=spec.guarantee.confidence,
            valid=True,
            n_items=spec.n_items,
            profiled=self.n,
            shares=shares,
            details={
                "chain": [names[m] for m in chain] + [names[spec.reference]],
                "thresholds": list(thresholds),
                "bound": (
                    "exact hypergeometric upper bound on the wrong answers the chain keeps, fixed-sequence over "
                    "thresholds; chain chosen on a pilot sample that is not used to certify it"
                ),
                "pilot_items": self.pilot,
                "allowed_disagreements": self.allowed,
                "chains_considered": [[names[m] for m in c] for c in self.chains],
                "alpha_per_bound": self.budget.per_look,
                "looks_planned": list(self.schedule.sizes),
                "models_without_scores": [names[m] for m in sorted(self.no_scores)],
                "shares_estimated_from_profiling": True,
                "estimated_unit_cost": estimate,
                "looks": self.looks,
                **({"fallback_reason": self.fallback_reason} if self.fallback_reason else {}),
            },
        )


class PilotedCascade(Cascade):
    """``cascade-profiled`` taking over from ``cascade`` when a score-first pass over every item is not expected
    to pay (an expensive head, or a saving only a two-stage chain reaches).

    Its chains use only the models ``cascade``'s pilot called, and its first look (which only chooses the
    chain) covers at least that pilot, so the pilot's answers are reused without a second call and the
    certificate rests on later items alone, at the whole δ: conditional on the pilot, the items after it are
    still in a uniformly random order, and the hand-over is a function of the pilot (docs/guarantee.md).
    """

    def __init__(self, spec, pilot: int, models: tuple[int, ...]):
        self.known_pilot = pilot
        super().__init__(spec)
        ms = sorted(models)
        self.chains = [(m,) for m in ms] + list(zip(ms, ms[1:], strict=False))
        self.live = list(range(len(self.chains)))
        self.active = list(ms)

    def _make_schedule(self) -> LookSchedule:
        first = max(self.first_look, self.known_pilot)
        return LookSchedule(self.spec.n_items, first=first, ratio=self.look_ratio, step=self.spec.batch_size)

    def projected_rest(self) -> float:
        """After the pilot: the projected bill for the rest of the batch (profiling included) of the chosen
        chain, or of the mix it handed over to; infinite when it stopped."""
        if self.stopped:
            return math.inf
        if self.delegate is not None:
            return self.delegate.projected_best()
        return self.projected_total(self.live)


def _kth_inserted(tree: list[int], top: int, k: int) -> int:
    """Rank of the (k+1)-th smallest inserted element (0-based k) in a Fenwick tree of counts."""
    position, remaining = 0, k + 1
    step = top
    while step:
        nxt = position + step
        if nxt < len(tree) and tree[nxt] < remaining:
            position = nxt
            remaining -= tree[nxt]
        step >>= 1
    return position  # the 1-based index position + 1 holds it; as a 0-based rank: position


class Margin(Policy):
    """Two-tier margin sampling as published: no guarantee; escalation share set by a per-item budget."""

    name = "margin"
    valid = False
    warmup: ClassVar[int] = 20

    def __init__(self, spec):
        super().__init__(spec)
        self.small = spec.option("small", 0)
        self.order = self.rng.permutation(spec.n_items)
        self.position = 0
        self.scores = np.full(spec.n_items, np.nan)
        self.costs = np.zeros(spec.n_items)

    @property
    def needs_scores(self) -> bool:
        return True

    def next_batch(self) -> ProfileBatch | None:
        if self.position >= self.spec.n_items:
            return None
        end = min(self.spec.n_items, self.position + 1024)
        return ProfileBatch(self.order[self.position : end], (self.small,))

    def observe(self, batch, agree, cost, score=None) -> None:
        self.position += len(batch.items)
        self.costs[batch.items] = cost[:, 0]
        if score is not None:
            self.scores[batch.items] = score[:, 0]

    def escalation_share(self) -> float:
        budget = self.spec.option("budget")
        small_cost = float(self.costs.mean())
        large_cost = self.spec.option("reference_cost")
        if budget is None or large_cost is None:
            return 1.0 - self.spec.guarantee.target  # without a budget: escalate the share T leaves
        return float(np.clip((budget - small_cost) / large_cost, 0.0, 1.0))

    def plan(self) -> Plan:
        spec = self.spec
        p = self.escalation_share()
        escalate = np.zeros(spec.n_items, dtype=bool)
        scores = np.nan_to_num(self.scores[self.order], nan=-np.inf)
        # Running p-quantile of the scores seen so far, by order statistics in a Fenwick tree over ranks.
        ranks = np.empty(len(scores), dtype=np.int64)
        ranks[np.argsort(scores, kind="stable")] = np.arange(len(scores))
        sorted_scores = np.sort(scores, kind="stable")
        tree = [0] * (len(scores) + 1)
        top = 1 << max(0, len(scores).bit_length())
        for k, (i, s, r) in enumerate(zip(self.order, scores, ranks, strict=True)):
            if k >= self.warmup and p > 0:
                escalate[i] = s < sorted_scores[_kth_inserted(tree, top, min(k - 1, int(p * k)))]
            j = int(r) + 1
            while j < len(tree):
                tree[j] += 1
                j += j & -j
        assignment = np.where(escalate, spec.reference, self.small).astype(np.int64)
        profiled = ~escalate  # the small model's answer, already paid, is final
        names = spec.models
        shares = {names[self.small]: float((~escalate).mean()), names[spec.reference]: float(escalate.mean())}
        certificate = Certificate(
            method=self.name,
            target=spec.guarantee.target,
            confidence=spec.guarantee.confidence,
            valid=False,
            n_items=spec.n_items,
            profiled=0,
            shares=shares,
            details={"escalation_share": p, "signal": "first-token top-2 logprob margin (or recorded confidence)"},
        )
        return Plan(assignment, profiled, certificate)
