"""SMART (Jo & Trummer, 2024) with every statistical step made valid, and never worse than the reference.

Profiling walks the batch in one uniformly random order, calling the reference and the candidate models still
in play. It opens with a tiny *pricing pilot* (a few items, every candidate): it only measures what each call
costs and chooses, from prices alone, which candidates profiling could ever pay for at this batch size; the
pilot's items never enter a bound. Each chosen candidate then gets an anytime-valid betting confidence sequence
(:class:`~smartmix.stats.BettingCS`) on its agreement over the items after the pilot, at δ split over the
chosen candidates only. Because the sequences hold at every sample size at once, bounds may be read after
every batch and profiling may stop at any time for any reason. The three methods differ only in *when* they
stop and *what* they apply to the rest:

- ``exhaustive``: SMART's rule — stop when the cheapest model not yet ruled out is certified;
- ``efficient``: stop as soon as more profiling is not expected to pay for itself (look-ahead on costs);
- ``mix``: like ``efficient``, but the rest is split among models by the model-mix program, with δ's
  assignment share covering the random split.

Never worse: every method stops profiling, and answers the rest with the reference, before the candidate calls
it made could lift the bill above ``(1 + allowance) ×`` reference-only (``allowance`` = 3% by default): the bill
if it stopped now plus the next stretch of profiling must stay under that cap, with the best plan certified so
far answering the rest. When it falls back, ``certificate.details["fallback_reason"]`` says why.

With ``spec.calibration`` (past outputs of the same models on the same task), the plan shape — which model (or
which pair, for the mix) and how many items to profile — is chosen from the past data alone; the batch then
profiles exactly that many items and certifies that one shape with a single exact hypergeometric bound at the
full δ (split only between the shape's models and the mix's random split).

Profiled items are answered by the reference and count as agreeing; the guarantee is on the realised agreement
over the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from smartmix.mixing import mix_unit_cost, solve_mix
from smartmix.policies.base import Certificate, Plan, Policy, ProfileBatch
from smartmix.policies.prefix_test import CERTIFIED_SHARE
from smartmix.stats import (
    BettingCS,
    DeltaBudget,
    LookSchedule,
    approx_upper,
    betting_approx_lower,
    hypergeom_lower,
    rest_agreeing_lower,
    split_lower,
    split_margin_estimate,
)

DEFAULT_ALLOWANCE = 0.025  # candidate calls a fallback may waste, as a share of the reference-only bill


def uses_allowance(method: str) -> bool:
    """Whether ``method`` profiles under the never-worse allowance (``options["allowance"]``)."""
    from smartmix.policies.base import Policy

    cls = Policy.registry.get(method)
    return cls is not None and issubclass(cls, Profiler)


@dataclass(frozen=True)
class CalibratedShape:
    """The plan shape chosen from past data: the candidates to certify and the sample size."""

    models: tuple[int, ...]
    sample: int
    expected_cost: float  # per item of the batch, in the calibration's prices
    reference_cost: float  # per item, reference only


class Profiler(Policy):
    """Shared profiling state: random order, pricing pilot, per-model counts, fees, certified bounds."""

    assignment_share: ClassVar[float] = 0.0  # fraction of δ kept for the random split of the rest
    # The bounds are read at this share of their δ. A sequence read as soon as it crosses is nearly exact at
    # the edge (a candidate just short of T: 0.954 over 1,000 trials at the full δ), so the realised miss rate
    # would sit at δ instead of below it; the cascade's certificate keeps the same room (prefix_test).
    certified_share: ClassVar[float] = CERTIFIED_SHARE
    first_look: ClassVar[int] = 20
    look_ratio: ClassVar[float] = 1.15
    allowance: ClassVar[float] = DEFAULT_ALLOWANCE
    pilot_items: ClassVar[int] = 10  # at most; fewer on small batches (see _pilot_size)
    sequences_enabled: ClassVar[bool] = False  # the pricing pilot and the betting sequences (model certifiers)
    min_draws: ClassVar[int] = 100  # certification draws before projections from the observed rates are trusted
    early_horizon: ClassVar[int] = 400  # the bets' horizon at least, until then (capped by the population)
    # A screen: labelled items after the pricing pilot that choose which candidates get δ, outside the bounds
    # like the pricing pilot. Only with several candidates and on batches where it is at most ``screen_share``.
    screen_items: ClassVar[int] = 0
    screen_share: ClassVar[float] = 0.01

    def __init__(self, spec):
        super().__init__(spec)
        n_items = spec.n_items
        self.order = self.rng.permutation(n_items)
        self.schedule = self._make_schedule()
        self.budget = DeltaBudget(
            spec.guarantee.delta, n_models=max(1, len(spec.candidates)), n_looks=1,
            assignment=self.assignment_share * spec.guarantee.delta,
        )
        n_models = len(spec.models)
        self.n = 0
        self.draws = np.zeros(n_models, dtype=np.int64)
        self.successes = np.zeros(n_models, dtype=np.int64)
        self.fees = np.zeros(n_models)
        # Certification starts after the pricing pilot: only items profiled from position ``cert_start`` on
        # enter the bounds, as a sample without replacement from the items after the pilot.
        self.profiling_allowance = float(spec.option("allowance", self.allowance))
        self.cert_start = self._pilot_size()
        self.cert_draws = np.zeros(n_models, dtype=np.int64)
        self.cert_successes = np.zeros(n_models, dtype=np.int64)
        self.k_lower = np.full(n_models, -1, dtype=np.int64)  # certified lower bound on the post-pilot count
        self.k_lower_draws = np.zeros(n_models, dtype=np.int64)
        self.k_lower_successes = np.zeros(n_models, dtype=np.int64)
        self.active: list[int] = list(spec.candidates)
        self.looks: list[dict] = []
        self.stopped = n_items == 0
        self.piloted = False
        self.sequences: dict[int, BettingCS] = {}
        self.alpha: dict[int, float] = {}
        self.certified_set: list[int] = []
        self.fallback_reason: str | None = None
        self.shape: CalibratedShape | None = None
        self.exact = False  # True: one exact hypergeometric look at a size fixed in advance (calibration)
        self.screening = False  # in the screen (after the pricing pilot, before any sequence is opened)
        self.screen: dict | None = None  # what the screen saw and kept, for the certificate
        if not self.stopped:
            reason = self._pre_check()
            if reason:
                self._fall_back(reason)

    def _make_schedule(self) -> LookSchedule:
        return LookSchedule(self.spec.n_items, first=self.first_look, ratio=self.look_ratio, step=self.spec.batch_size)

    def _pilot_size(self) -> int:
        """Few enough items that calling every candidate on them wastes at most the allowance, even if each
        candidate cost as much as the reference."""
        if not self.sequences_enabled:
            return 0
        k = max(1, len(self.spec.candidates))
        size = int(self.profiling_allowance * self.spec.n_items / k)
        return int(min(size, self.pilot_items, self.spec.batch_size, self.spec.n_items))

    # -- never worse ------------------------------------------------------------------------------
    def _pre_check(self) -> str | None:
        """Reasons to answer everything with the reference before any call."""
        spec = self.spec
        if not spec.candidates:
            return "no candidate model besides the reference"
        required = spec.guarantee.required_agreeing(spec.n_items)
        if required >= spec.n_items:
            return (
                f"target {spec.guarantee.target:g} on {spec.n_items:,} items leaves no room for a single "
                "disagreement: only the reference can meet it"
            )
        if self.sequences_enabled and self.cert_start < 1:
            return (
                f"batch too small: calling the {len(spec.candidates)} candidate(s) even once could cost more than "
                f"the {self.profiling_allowance:.1%} profiling allowance of the reference-only bill"
            )
        if self.perfect_sample_size() is None:
            return (
                f"batch too small: {spec.n_items:,} items cannot certify even a candidate that always agrees "
                f"at target {spec.guarantee.target:g} and confidence {spec.guarantee.confidence:g}"
            )
        return None

    def perfect_sample_size(self) -> int | None:
        """Fewest post-pilot items that could certify a candidate agreeing on every item (None: none can)."""
        spec = self.spec
        population = spec.n_items - self.cert_start
        required = spec.guarantee.required_agreeing(spec.n_items) - self.cert_start
        alpha = self.bound_delta / 3.0  # the sequence's price, see betting_approx_lower
        if population <= 0:
            return None
        lo, hi = 1, population
        if hypergeom_lower(hi, hi, population, alpha) < required:
            return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if hypergeom_lower(mid, mid, population, alpha) >= required:
                hi = mid
            else:
                lo = mid
        return hi if hi < population else None

    @property
    def bound_delta(self) -> float:
        """What the candidates' sequences share: δ less the split's share, read at ``certified_share``."""
        return self.certified_share * (self.spec.guarantee.delta - self.budget.assignment)

    @property
    def split_delta(self) -> float:
        """What the mix's random split is certified at: with the sequences, at ``certified_share`` of its share;
        with calibration (one exact look at a size fixed in advance, not a bound read as soon as it crosses),
        at its full share, as the look itself."""
        return self.budget.assignment * (1.0 if self.exact else self.certified_share)

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self.active = []
        self.stopped = True

    @property
    def reference_only_estimate(self) -> float:
        return self.spec.n_items * self.unit_cost(self.spec.reference)

    @property
    def wasted(self) -> float:
        """Fees paid to candidates on profiled items: what a fallback to the reference would have wasted."""
        return float(sum(self.fees[m] for m in self.spec.candidates))

    def profiling_room(self, unit_now: float) -> float:
        """What profiling may still spend beyond answering the rest with the plan certified now (``unit_now``
        per item) before the bill would pass ``(1 + allowance) ×`` reference-only: the one never-worse cap."""
        cap = (1.0 + self.profiling_allowance) * self.reference_only_estimate
        return cap - float(self.fees.sum()) - self.rest * unit_now

    def affordable(
        self, kept: list[int], costs: np.ndarray, unit_now: float, until: int | None = None,
        key: Callable[[int], Any] | None = None,
    ) -> list[int]:
        """The largest part of ``kept`` whose profiling up to ``until`` items (default: the next look) keeps the
        bill under ``(1 + allowance) ×`` reference-only, the best plan certified now answering the rest. Models
        are dropped least promising first: by ``key`` if given, else by the plan each would allow alone if its
        observed agreement rate were certified."""
        reference = self.spec.reference
        room = self.profiling_room(unit_now)
        nxt = until or self.schedule.next_size(self.n) or self.spec.n_items
        chunk = max(0, min(nxt, self.spec.n_items) - self.n)
        finite = np.where(np.isfinite(costs), costs, 1e9)

        def promise(m: int) -> tuple[float, float]:
            lower = np.zeros(len(costs))
            lower[reference] = 1.0
            lower[m] = approx_upper(self.rate(m), int(self.draws[m]), self.spec.n_items, 0.1)  # optimistic
            return (self.plan_unit_cost(self.n, lower, finite), costs[m])

        kept = sorted(kept, key=key or promise)
        while kept:
            if chunk * (costs[reference] + sum(costs[m] for m in kept) - unit_now) <= room:
                break
            kept.pop()
        return kept

    # -- the loop --------------------------------------------------------------------------------
    def next_batch(self) -> ProfileBatch | None:
        if self.stopped or self.n >= self.spec.n_items:
            return None
        if self.exact:
            end = min(self.n + self.spec.batch_size, self.cert_start + self.shape.sample)
        elif not self.piloted and self.n < self.cert_start:
            end = min(self.n + self.spec.batch_size, self.cert_start) if self.screening else self.cert_start
        else:
            end = min(self.n + self.spec.batch_size, self.schedule.next_size(self.n) or self.spec.n_items)
        models = tuple(sorted(self.active)) + (self.spec.reference,)
        return ProfileBatch(self.order[self.n : end], models)

    def observe(
        self, batch: ProfileBatch, agree: np.ndarray, cost: np.ndarray, score: np.ndarray | None = None
    ) -> None:
        self.record_scores(batch, agree, score)
        k = len(batch.items)
        certifying = self.n >= self.cert_start  # batches never straddle the pilot's end
        for j, m in enumerate(batch.models):
            agreeing = int(np.count_nonzero(agree[:, j]))
            self.draws[m] += k
            self.successes[m] += agreeing
            self.fees[m] += float(np.sum(cost[:, j]))
            if certifying:
                self.cert_draws[m] += k
                self.cert_successes[m] += agreeing
                if m in self.sequences:
                    self.sequences[m].update(agree[:, j].astype(float))
        self.n += k
        if self.n >= self.spec.n_items:
            self.stopped = True
        elif self.exact:
            if self.n >= self.cert_start + self.shape.sample:
                self._certify_exact()
                self.stopped = True
        elif not self.piloted and self.n >= self.cert_start and self.sequences_enabled:
            self.piloted = True
            self._end_pilot()
        elif self.n < self.cert_start:
            pass  # still in the screen: no bound exists yet
        elif self.n in self.schedule.sizes:
            self._certify(self.active)
            self.looks.append(self._look_record())
            if self.decide():
                self.stopped = True

    def record_scores(self, batch: ProfileBatch, agree: np.ndarray, score: np.ndarray | None) -> None:
        """Hook for policies that learn from per-item outcomes, not only counts."""

    def _end_pilot(self) -> None:
        """Choose, from prices alone, the candidates profiling could pay for; give them the whole δ (or, on a
        large batch with several of them, first screen them: :meth:`_end_screen`)."""
        if self.screening:
            self._end_screen()
            return
        costs = self.unit_costs()
        reference = self.spec.reference
        c_ref = costs[reference]
        perfect = self.perfect_sample_size() or self.spec.n_items
        room = self.profiling_allowance * self.reference_only_estimate - self.wasted
        chosen: list[int] = []
        for m in sorted(self.active, key=lambda m: costs[m]):  # cheapest first, while the allowance lasts
            if np.isfinite(costs[m]) and costs[m] < c_ref and perfect * (costs[m] + sum(costs[c] for c in chosen)) <= room:
                chosen.append(m)
        chosen = self.affordable(chosen, costs, c_ref)
        if not chosen:
            self._fall_back(
                "no candidate can pay for its profiling at this batch size: each is either not cheaper than the "
                f"reference or would spend more than the {self.profiling_allowance:.0%} profiling allowance "
                f"before it could be certified (at least {perfect:,} items)"
            )
            return
        self.active = chosen
        if self._screen_fits(chosen, costs):
            # The screen's items stay out of the bounds, as the pricing pilot's: conditional on them the items
            # after them are still in a uniformly random order, so the candidates it keeps share δ alone.
            self.screening = True
            self.piloted = False
            self.cert_start = self.n + self.screen_items
            return
        self.certified_set = list(chosen)
        self._open_sequences(chosen, horizon=self.horizon_floor(4 * perfect))

    def _screen_fits(self, chosen: list[int], costs: np.ndarray) -> bool:
        """A screen runs with several candidates, on a batch it is a small share of, when its calls fit the
        allowance left."""
        if self.screen_items <= 0 or len(chosen) < 2:
            return False
        if self.n + self.screen_items > self.screen_share * self.spec.n_items:
            return False
        room = self.profiling_allowance * self.reference_only_estimate - self.wasted
        return self.screen_items * float(sum(costs[m] for m in chosen)) <= room

    def _end_screen(self) -> None:
        """Keep the candidates worth profiling on, from the pilot's and the screen's items only, and open a
        sequence for each at δ split over them alone."""
        self.screening = False
        screened = list(self.active)
        kept, horizon = self.screened(screened, self.unit_costs())
        names = self.spec.models
        self.screen = {
            "items": self.cert_start,
            "screened": [names[m] for m in sorted(screened)],
            "kept": [names[m] for m in sorted(kept)],
        }
        if not kept:
            self._fall_back(
                f"on the first {self.cert_start:,} items no candidate's profiling was projected to pay for itself"
            )
            return
        self.active = list(kept)
        self.certified_set = list(kept)
        self._open_sequences(kept, horizon=self.horizon_floor(horizon))

    def screened(self, candidates: list[int], costs: np.ndarray) -> tuple[list[int], float]:
        """The candidates to certify after the screen, and the bets' horizon (draws). Default: all of them."""
        return candidates, 4 * (self.perfect_sample_size() or self.spec.n_items)

    def _open_sequences(self, models: list[int], horizon: float) -> None:
        population = self.spec.n_items - self.cert_start
        share = self.bound_delta / max(1, len(models))
        for m in models:
            self.alpha[m] = share
            self.sequences[m] = BettingCS(population, share, horizon=horizon)

    def _certify(self, models: list[int]) -> None:
        for m, cs in self.sequences.items():
            if cs.draws == 0:
                continue
            self.k_lower[m] = cs.lower_count()
            self.k_lower_draws[m] = self.cert_draws[m]
            self.k_lower_successes[m] = self.cert_successes[m]

    def _certify_exact(self) -> None:
        """The calibrated design's single look, at the sample size fixed in advance."""
        population = self.spec.n_items - self.cert_start
        for m, alpha in self.alpha.items():
            if self.cert_draws[m]:
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

    def horizon_floor(self, horizon: float) -> float:
        """The bets' horizon, kept from being tuned to a few dozen draws while the rates are still noise: such
        bets are large, what they lose on the first draws stays lost in the product, and the bound read
        thousands of draws later is looser for it (tests/test_betting.py)."""
        if self.n - self.cert_start < self.min_draws:
            population = self.spec.n_items - self.cert_start
            return max(horizon, min(population, self.early_horizon))
        return horizon

    def set_horizons(self, n_future: int) -> None:
        """Tune the bets for the sample size profiling is heading to (a choice from past draws only)."""
        for cs in self.sequences.values():
            cs.set_horizon(self.horizon_floor(max(n_future - self.cert_start, cs.draws + self.spec.batch_size)))

    # -- calibration ---------------------------------------------------------------------------------
    def _calibrate(self) -> None:
        """Choose the plan shape from past data only; certify it with one exact look at the full δ."""
        from smartmix.calibration import choose_shape

        shape = choose_shape(self, self.spec.calibration)
        self.shape = shape
        self.cert_start = 0
        self.piloted = True
        if shape is None or not shape.models:
            self._fall_back(
                "the calibration data say no plan pays for its profiling at this batch size and target"
            )
            return
        self.exact = True
        self.active = list(shape.models)
        self.certified_set = list(shape.models)
        share = (self.spec.guarantee.delta - self.budget.assignment) / len(shape.models)
        for m in shape.models:
            self.alpha[m] = share

    # -- quantities --------------------------------------------------------------------------------
    def plan_unit_cost(self, n: int, lower: np.ndarray, costs: np.ndarray) -> float:
        """Cost per remaining item of the cheapest plan the bounds ``lower`` allow after ``n`` profiled."""
        rest = self.spec.n_items - n
        if rest <= 0:
            return 0.0
        need_frac = (self.spec.guarantee.required_agreeing(self.spec.n_items) - n) / rest
        ok = lower >= need_frac - 1e-12
        return float(costs[ok].min())

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
            int(self.k_lower[m]), int(self.cert_successes[m]), int(self.cert_draws[m]), n - self.cert_start, population
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
        if self.rest > 0 and counts[spec.reference] == self.rest and self.fallback_reason is None:
            self.fallback_reason = (
                "no candidate was certified to reach the target on the rest before more profiling stopped paying "
                "for itself"
            )
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
        if self.exact:
            bound = "exact hypergeometric lower bound at one sample size fixed in advance from calibration data"
        else:
            bound = (
                "anytime-valid betting confidence sequence for sampling without replacement (read after every look)"
            )
        details = {
            "bound": bound,
            "pilot_items": self.cert_start,
            "certified_models": [names[m] for m in self.certified_set],
            "alpha_per_model": {names[m]: a for m, a in self.alpha.items()},
            "delta_split": {"models": self.budget.delta - self.budget.assignment, "assignment": self.budget.assignment},
            "certified_share": 1.0 if self.exact else self.certified_share,
            "required_agreeing": spec.guarantee.required_agreeing(spec.n_items),
            "certified_agreeing": self.n + certified - margin,
            "unit_costs": {names[m]: self.unit_cost(m) for m in range(len(names)) if self.draws[m]},
            "profiling_allowance": (
                f"profiling stops before candidate calls that a fallback would waste could lift the bill above "
                f"{1 + self.profiling_allowance:.4g}x the reference-only cost"
            ),
            "looks": self.looks,
        }
        if self.screen is not None:
            details["screen"] = self.screen
        if self.fallback_reason:
            details["fallback_reason"] = self.fallback_reason
        if self.shape is not None:
            details["calibration"] = {
                "source": spec.calibration.source,
                "models": [names[m] for m in self.shape.models],
                "sample": self.shape.sample,
                "expected_savings": self.shape.reference_cost / self.shape.expected_cost if self.shape.expected_cost else None,
            }
        elif spec.calibration is not None:
            details["calibration"] = {"source": spec.calibration.source, "models": [], "sample": 0}
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
            details=details,
        )


class Exhaustive(Profiler):
    """SMART's profiling rule with valid bounds: profile until the cheapest model not ruled out is certified."""

    name = "exhaustive"
    sequences_enabled = True
    optimism: ClassVar[float] = 0.2  # what the allowance is reserved for: each model at this upper bound on its rate

    def __init__(self, spec):
        super().__init__(spec)
        self.invalid: set[int] = set()
        if spec.calibration is not None and not self.stopped:
            self._calibrate()

    def certifying_size(self, m: int, optimistic: bool = False) -> int | None:
        """Planning estimate of the sample size at which model ``m`` would be certified if its observed rate
        (or, ``optimistic``, a one-sided upper bound on it) held (None: not within the batch)."""
        population = self.spec.n_items - self.cert_start
        p = self.rate(m)
        if optimistic:
            p = approx_upper(p, int(self.draws[m]), self.spec.n_items, self.optimism)
        alpha = self.alpha.get(m, self.bound_delta / max(1, len(self.spec.candidates)))
        sizes = LookSchedule(self.spec.n_items, first=self.n + self.spec.batch_size, ratio=1.1,
                             step=self.spec.batch_size).sizes
        for n_future in sizes:
            rest = self.spec.n_items - n_future
            if rest <= 0:
                return None
            draws = int(self.cert_draws[m]) + (n_future - max(self.n, self.cert_start))
            k_low = betting_approx_lower(p, draws, population, alpha) * population
            if (k_low - p * draws) / rest >= self.need(n_future) / rest:
                return n_future
        return None

    def tune_bets(self) -> None:
        """Tune each model's bets to the sample size at which it is projected to be certified (twice the sample
        so far when none is in sight). A bet tuned near the sample where the bound is read is close to the
        exact one-look bound; re-tuning to a growing multiple of the sample instead is the anytime choice,
        looser by a log factor. Either is a choice from past draws only: the sequence stays valid."""
        for m, cs in self.sequences.items():
            target = self.certifying_size(m) if m in self.active else None
            drawn = max(self.n - self.cert_start, 1)
            horizon = (target - self.cert_start) if target is not None else 2 * drawn
            cs.set_horizon(self.horizon_floor(max(horizon, cs.draws + self.spec.batch_size)))

    def decide(self) -> bool:
        self.tune_bets()
        need_frac = self.need() / self.rest
        for m in list(self.active):
            # ruled out only when clearly below: the test is repeated at every look
            upper = approx_upper(self.rate(m), int(self.draws[m]), self.spec.n_items, self.alpha.get(m, 0.05) / 20)
            if upper < need_frac:
                self.invalid.add(m)
        pool = [m for m in self.certified_set if m not in self.invalid]
        satisfied = [m for m in pool if self.rest_lower(m) >= need_frac]
        if not pool:
            return True
        cheapest_open = pool[0]  # candidates are ordered cheapest first
        if satisfied and satisfied[0] == cheapest_open:
            return True
        cap = satisfied[0] if satisfied else len(self.spec.models)
        # a model the allowance dropped stays dropped: its sequence has fallen behind
        kept = [m for m in pool if m < cap and m not in satisfied and m in self.active]
        costs = self.unit_costs()
        unit_now = costs[satisfied[0]] if satisfied else costs[self.spec.reference]
        # Once the rates mean something, the allowance is reserved for the model whose certification is
        # projected to cost least in all (profiling up to its certifying size, then it answers the rest): it is
        # checked up to that size, not only to the next look, and models are dropped by their projected total.
        # Otherwise the allowance goes to every model while each next stretch fits, and runs out before the one
        # worth waiting for can be certified. The projection only chooses whom the allowance is for: whether to
        # stop is left to the next stretch's check.
        until, key = None, None
        if self.n - self.cert_start >= self.min_draws:
            reference_cost = costs[self.spec.reference]
            totals = {}
            for m in kept:
                size = self.certifying_size(m, optimistic=True)
                totals[m] = (math.inf, 0) if size is None else (
                    (size - self.n) * (reference_cost + costs[m]) + (self.spec.n_items - size) * costs[m], size)
            lead = min(kept, key=lambda m: totals[m][0], default=None)
            if lead is not None and math.isfinite(totals[lead][0]):
                until = max(totals[lead][1], self.schedule.next_size(self.n) or 0)
                key = totals.__getitem__
        active = self.affordable(kept, costs, unit_now, until=until, key=key)
        self.active = active or self.affordable(kept, costs, unit_now, key=key)
        return not self.active

    def choose(self) -> np.ndarray:
        counts = np.zeros(len(self.spec.models), dtype=int)
        need_frac = self.need() / self.rest
        certified = [m for m in self.spec.candidates if self.k_lower[m] >= 0 and self.rest_lower(m) >= need_frac]
        counts[certified[0] if certified else self.spec.reference] = self.rest
        return counts


class Efficient(Profiler):
    """Stop profiling once more of it is not expected to pay for itself; apply the cheapest certified model.

    At each look the policy compares the cost of stopping now with the projected cost of profiling up to
    each of the next few looks (profiling fees plus the plan those looks would allow, assuming the observed
    agreement rates hold), and drops models whose profiling does not pay. Like any stopping rule it leaves the
    guarantee intact.
    """

    name = "efficient"
    screen_items = 120
    horizon: ClassVar[int] = 32
    settled: ClassVar[float] = 1.25
    optimism: ClassVar[float] = 0.2  # the look-ahead prices each model at this one-sided upper bound on its rate
    sequences_enabled = True

    def __init__(self, spec):
        super().__init__(spec)
        if spec.calibration is not None and not self.stopped:
            self._calibrate()

    def margin_fraction(self, rest: int) -> float:
        return 0.0

    def current_lower(self, n: int | None = None) -> np.ndarray:
        return np.array([self.rest_lower(m, n) for m in range(len(self.spec.models))])

    def projected_lower(self, kept: list[int], n_future: int) -> np.ndarray:
        """Each kept model's planning estimate of its bound on the rest after profiling up to ``n_future``."""
        lower = self.current_lower(n_future)
        rest = self.spec.n_items - n_future
        population = self.spec.n_items - self.cert_start
        for m in kept:
            draws = int(self.cert_draws[m]) + (n_future - max(self.n, self.cert_start))
            # a plausible rate, not the point estimate: a few hundred draws are too noisy to give up on a
            # model that is a point short (what going on may waste is bounded by the allowance)
            p = approx_upper(self.rate(m), int(self.draws[m]), self.spec.n_items, self.optimism)
            # before the sequences open (the screen), δ would be split over ``kept`` alone
            alpha = self.alpha.get(m, self.bound_delta / max(1, len(kept)))
            k_low = betting_approx_lower(p, draws, population, alpha) * population
            lower[m] = min(max((k_low - p * draws) / rest, 0.0), 1.0) if rest > 0 else 1.0
        return lower

    def future_sizes(self) -> list[int]:
        """Sample sizes the look-ahead prices: geometric from the next look to the whole batch."""
        sizes = list(LookSchedule(self.spec.n_items, first=self.n + self.spec.batch_size, ratio=1.25,
                                  step=self.spec.batch_size).sizes)
        return sizes[: self.horizon]

    def projected_total(self, kept: list[int], costs: np.ndarray) -> float:
        """Cheapest projected cost of the rest if profiling goes on with ``kept`` (up to ``horizon`` looks)."""
        return self.projected_plan(kept, costs)[0]

    def affordable_until(self, kept: list[int], costs: np.ndarray) -> float:
        """The largest sample size profiling with ``kept`` can reach before the allowance stops it (the rest
        answered by the best plan certified now): a look beyond it is never reached, so it is not priced."""
        reference = self.spec.reference
        unit_now = min(self.plan_unit_cost(self.n, self.current_lower(), costs), costs[reference])
        room = self.profiling_room(unit_now)
        per_item = costs[reference] + sum(costs[m] for m in kept) - unit_now
        if per_item <= 0:
            return math.inf
        return self.n + max(room, 0.0) / per_item

    def projected_plan(self, kept: list[int], costs: np.ndarray) -> tuple[float, int]:
        per_item_profiling = costs[self.spec.reference] + sum(costs[m] for m in kept)
        best, best_n = math.inf, self.spec.n_items
        reachable = self.affordable_until(kept, costs)
        for n_future in self.future_sizes():
            if n_future > reachable:
                break
            rest = self.spec.n_items - n_future
            lower = self.projected_lower(kept, n_future)
            total = (n_future - self.n) * per_item_profiling + rest * self.plan_unit_cost(n_future, lower, costs)
            if total < best:
                best, best_n = total, n_future
        return best, best_n

    def smallest_paying(self, kept: list[int], costs: np.ndarray) -> tuple[list[int], float, int]:
        """Drop models while a smaller set to profile is projected to cost less in all: the set, its
        projected cost of the rest and the sample size it heads to."""
        best, best_n = self.projected_plan(kept, costs)
        while kept:
            # smaller sets to profile: all but one model, or (the allowance reaches further with fewer
            # models, so dropping one at a time can miss it) a single model
            options = [[k for k in kept if k != m] for m in kept]
            if len(kept) > 2:
                options += [[m] for m in kept]
            (value, value_n), smaller = min(
                ((self.projected_plan(option, costs), option) for option in options), key=lambda t: t[0][0]
            )
            if value >= best:
                break
            best, best_n = value, value_n
            kept = smaller
        return kept, best, best_n

    def screened(self, candidates: list[int], costs: np.ndarray) -> tuple[list[int], float]:
        """The look-ahead of :meth:`decide` on the screen's rates, each set priced with δ split over it alone;
        none kept when the best is not projected to beat the plan certified now (the reference)."""
        kept, best, best_n = self.smallest_paying(list(candidates), costs)
        if best >= self.rest * self.plan_unit_cost(self.n, self.current_lower(), costs):
            return [], 0
        return kept, max(best_n - self.cert_start, self.spec.batch_size)

    def decide(self) -> bool:
        costs = self.unit_costs()
        unit_now = self.plan_unit_cost(self.n, self.current_lower(), costs)
        now = self.rest * unit_now
        kept = list(self.active)
        best, best_n = self.projected_plan(kept, costs)
        if self.n - self.cert_start < self.min_draws:
            # Rates from a handful of items are too noisy to drop a model or stop on; only the allowance may.
            self.active = self.affordable(kept, costs, min(unit_now, costs[self.spec.reference]))
            if self.active:
                self.set_horizons(best_n)
            return not self.active
        kept, best, best_n = self.smallest_paying(kept, costs)
        self.active = self.affordable(kept, costs, min(unit_now, costs[self.spec.reference]))
        if self.active:
            self.set_horizons(best_n)
        if not self.active or best >= now:
            return True
        # Going on is priced with the planning estimate of the bounds, which stays about a point of agreement
        # above the real bound on a large sample. Once the real plan costs about what the estimate says it
        # does now (within ``settled``), a gain over that estimate is the estimate's own optimism, not a
        # reason to profile on.
        now_estimated = self.rest * self.plan_unit_cost(self.n, self.projected_lower(kept, self.n), costs)
        return now <= self.settled * now_estimated and best >= now_estimated

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
        return split_margin_estimate(rest, self.split_delta) / rest if rest > 0 else 0.0

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
        alpha = self.split_delta / len(used)
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
