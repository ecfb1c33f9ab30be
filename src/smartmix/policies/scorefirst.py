"""``cascade``: the cheap model scores every item first, then the reference certifies the longest score prefix.

Steps (validity in docs/guarantee.md, statistics in :mod:`smartmix.policies.prefix_test`):

1. **Pilot** (skipped with a calibration file). One item is asked of every model, which prices them; a small
   uniformly random pilot is then asked of the reference and of the cheapest candidates whose calls fit a
   stated allowance (``pilot_overhead`` of the reference-only bill). The pilot only chooses: which candidate
   heads the cascade, and how many reference labels to buy. It never enters the certificate, and its items
   are answered by the reference. On batches where it stays out of the certificate, its first part
   (``screen_share``, at least ``screen_min`` items) screens the candidates, and the rest of the pilot asks
   only those still in reach of the best projection (:meth:`ScoreFirstCascade._screen`).
2. **Never worse.** For each candidate with scores, the projected bill of a score-first cascade (its calls on
   every item, the reference on what it does not keep and on the labels) is compared with reference-only;
   the first pass is paid only when the projected saving exceeds the first pass's own fee. Otherwise
   ``cascade-profiled`` on the pilot's models takes over if it projects a saving and the pilot stays out of
   the certificate (see :class:`~smartmix.policies.cascade.PilotedCascade`); else the rest goes to the
   reference (or, without any confidence score, to the model mix), and the certificate says why.
3. **First pass.** The chosen head answers every other item, so every item's score is known before any
   label is bought. Items are put in one order, highest score first, ties broken by a random order drawn
   at the start. Items without a score go to the reference.
4. **Second stage** (pilot outside the certificate only). When the pilot projects that sending the items
   the head scored at or below a split to a pricier candidate beats every one-pass plan by a margin (both
   one deviation worse and at the expected outcome), that candidate answers those items, and the order
   becomes the head's items by head score, then the second model's by its own score
   (:mod:`smartmix.policies.second_stage`). Both passes together never cost more than the priciest
   candidate's pass over the batch.
5. **Certification.** The reference labels a uniformly random sample (without replacement) of the ordered
   items, of the size re-planned from the now-known scores. The order is kept up to just before the
   (c + 1)-th sampled wrong answer, c being the most the exact bound on the wrong answers that stay allows
   (:mod:`smartmix.policies.prefix_test`); each kept item keeps its group's model's answer, sampled items take
   the reference's answer, everything else goes to the reference.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from smartmix.policies.base import Certificate, Plan, Policy, ProfileBatch
from smartmix.policies.prefix_test import (
    CERTIFIED_SHARE,
    UNLIMITED,
    certificate_budget,
    certified_prefix,
    expected_rank_fraction,
    plan_sample,
    sample_size,
)
from smartmix.policies.second_stage import best_second_stage, composite_key
from smartmix.stats import binomial_upper

__all__ = ["ScoreFirstCascade"]


class ScoreFirstCascade(Policy):
    """Guaranteed cascade: the cheap model answers every item, and its most confident ones are kept as far as a certified prefix of its scores allows.

    See the module doc for why each step is valid.
    """

    name = "cascade"
    pilot_overhead: ClassVar[float] = 0.015  # the pilot's candidate calls, as a share of the reference-only bill
    pilot_min: ClassVar[int] = 20
    pilot_max: ClassVar[int] = 400
    pass_chunk: ClassVar[int] = 512
    go_factor: ClassVar[float] = 1.0  # the projected saving must exceed this many first passes' fees
    min_scored: ClassVar[float] = 0.5  # a candidate whose pilot answers carry scores less often has none
    labels_per_root: ClassVar[float] = 4.0  # reference labels certified on: this many times sqrt(N) ...
    full_scale_wrong_share: ClassVar[float] = 0.1  # ... while 1 - T is at least this (see labels_rule)
    mix_margin: ClassVar[float] = 0.85  # without scores, the mix must project below this share of reference-only
    separate_pilot_share: ClassVar[float] = 0.02  # a pilot at most this share of N stays out of the certificate
    second_stage_margin: ClassVar[float] = 0.10  # a two-pass plan must project this much below the best one-pass plan
    screen_share: ClassVar[float] = 0.25  # a separate pilot's first part, asked of every pilot model, screens them
    screen_slack: ClassVar[float] = 1.25  # a model stays when its projection is within this factor of the best
    screen_min: ClassVar[int] = 100  # fewer pilot items screen nothing
    route_min: ClassVar[int] = 20  # cascade routing: fewest pilot items below a bar that can justify it

    def __init__(self, spec):
        super().__init__(spec)
        n, n_models = spec.n_items, len(spec.models)
        self.order = self.rng.permutation(n)
        self.tiebreak = self.rng.random(n)
        self.agree = np.zeros((n, n_models), dtype=bool)
        self.labelled = np.zeros(n, dtype=bool)  # the reference answered during profiling
        self.score = np.full((n, n_models), np.nan)
        self.cost = np.full((n, n_models), np.nan)
        self.called = np.zeros((n, n_models), dtype=bool)
        self.fees = np.zeros(n_models)
        self.calls = np.zeros(n_models, dtype=np.int64)
        self.pilot_size = 0 if n == 0 else min(n, max(self.pilot_min, min(self.pilot_max, round(2 * math.sqrt(n)))))
        self.pilot_models: tuple[int, ...] = ()
        self.screen_size = self.pilot_size  # pilot items asked of every pilot model (see _screen)
        self.screened_out: tuple[int, ...] = ()
        self.head: int | None = None
        self.second: int | None = None  # second stage (see smartmix.policies.second_stage); None: head only
        self.split = -math.inf  # head scores at or below this go to the second stage
        self.second_items: np.ndarray = np.zeros(0, dtype=np.int64)
        self.second_passed = 0
        self.sample: np.ndarray = np.zeros(0, dtype=np.int64)  # the certification sample (labelled)
        self._to_label: list[ProfileBatch] = []  # label batches still to ask: each with the model its items keep
        self.scored_order: np.ndarray = np.zeros(0, dtype=np.int64)  # eligible items, highest score first
        self.first_pass_items: np.ndarray = np.zeros(0, dtype=np.int64)
        self.passed = 0
        self.projection: dict[str, Any] = {}
        self.fallback_reason: str | None = None
        self.delegate: Policy | None = None
        # past data for the same task (BatchSpec.calibration; an option of the same name until that lands)
        self.calibration = getattr(spec, "calibration", None) or spec.option("calibration")
        self.alpha = spec.guarantee.delta  # per certified head: δ over the heads the pilot chose among
        # A pilot that is a small share of the batch only plans (head, sample size) and stays out of the
        # certificate, which then gets the full δ; a larger one joins the certification sample, whose size
        # is then fixed by a rule that looks at no label (see labels_rule), and δ is split over the heads.
        self.reuse_pilot = self.pilot_size > self.separate_pilot_share * n
        self.heads_considered: list[int] = []
        self.planned_labels = 0
        # cascade routing: the router's predicted agreement (items x models), known before any call
        self.predicted = None if spec.predicted is None else np.asarray(spec.predicted, dtype=float)
        self.routed: np.ndarray = np.zeros(0, dtype=np.int64)  # items sent to the reference without the head's call
        self.route_bar = -math.inf
        self.phase = "probe" if n else "done"
        if n and self.calibration is not None:
            self._choose_from_calibration()

    # -- the loop ------------------------------------------------------------------------------------
    @property
    def needs_scores(self) -> bool:
        return True

    @property
    def reference(self) -> int:
        return self.spec.reference

    def next_batch(self) -> ProfileBatch | None:
        if self.delegate is not None:
            return self._replay_known()
        spec = self.spec
        if self.phase == "probe":
            return ProfileBatch(self.order[:1], (*spec.candidates, self.reference))
        if self.phase == "pilot":
            return ProfileBatch(self.order[1 : self.screen_size], (*self.pilot_models, self.reference))
        if self.phase == "pilot_rest":
            return ProfileBatch(self.order[self.screen_size : self.pilot_size], (*self.pilot_models, self.reference))
        if self.phase == "first_pass":
            items = self.first_pass_items[self.passed : self.passed + self.pass_chunk]
            return ProfileBatch(items, (self.head,))
        if self.phase == "second_pass":
            items = self.second_items[self.second_passed : self.second_passed + self.pass_chunk]
            return ProfileBatch(items, (self.second,))
        if self.phase == "sample":
            return self._to_label[0]
        return None

    def observe(self, batch, agree, cost, score=None) -> None:
        if self.delegate is not None:
            self.delegate.observe(batch, agree, cost, score)
            return
        items = np.asarray(batch.items)
        has_reference = self.reference in batch.models
        for j, m in enumerate(batch.models):
            fresh = ~self.called[items, m]
            self.fees[m] += float(np.nansum(cost[:, j]))
            self.cost[items, m] = cost[:, j]
            self.calls[m] += int(fresh.sum())
            self.called[items, m] = True
            if score is not None:
                self.score[items, m] = score[:, j]
            if has_reference:
                self.agree[items, m] = agree[:, j]
        if has_reference:
            self.labelled[items] = True
        if self.phase == "probe":
            self._after_probe()
        elif self.phase == "pilot":
            if self.screen_size < self.pilot_size:
                self._screen()
            else:
                self._after_pilot()
        elif self.phase == "pilot_rest":
            self._after_pilot()
        elif self.phase == "first_pass":
            self.passed += len(items)
            if self.passed >= len(self.first_pass_items):
                self._after_first_pass()
        elif self.phase == "second_pass":
            self.second_passed += len(items)
            if self.second_passed >= len(self.second_items):
                self._prepare_certification()
        elif self.phase == "sample":
            self._to_label.pop(0)
            if not self._to_label:
                self.phase = "done"

    # -- decisions -----------------------------------------------------------------------------------
    def unit_cost(self, m: int) -> float:
        return float(self.fees[m] / self.calls[m]) if self.calls[m] else math.inf

    @property
    def allowed(self) -> int:
        """Wrong answers the batch may contain: N − ⌈T·N⌉."""
        return self.spec.n_items - self.spec.guarantee.required_agreeing(self.spec.n_items)

    def _after_probe(self) -> None:
        if self.pilot_size <= 1:
            self._stop("the batch is too small for a cascade to pay for its pilot")
            return
        reference_cost = self.unit_cost(self.reference)
        allowance = self.pilot_overhead * self.spec.n_items * reference_cost
        chosen, spent = [], 0.0
        for m in sorted(self.spec.candidates, key=self.unit_cost):
            extra = (self.pilot_size - 1) * self.unit_cost(m)
            if not chosen or spent + extra <= allowance:
                chosen.append(m)
                spent += extra
        self.pilot_models = tuple(sorted(chosen))
        if not self.reuse_pilot and len(self.pilot_models) > 1:
            screen = max(self.screen_min, round(self.screen_share * self.pilot_size))
            self.screen_size = min(self.pilot_size, screen)
        self.phase = "pilot"

    def _screen(self) -> None:
        """After the pilot's first part, drop the pilot models that project far from heading the cascade or
        serving as its second stage; the rest of the pilot asks only the others (and the reference).

        The pilot stays out of the certificate (this runs only then), so how it is spent costs no δ. A model
        stays when its projection at the expected outcome is within ``screen_slack`` of the best one-pass
        projection, as a head or behind a cheaper head that stays: a few dozen items only rule out the
        clearly outclassed, such as a pricier model that would not beat the cheapest even keeping every item.
        """
        screen = self.order[: self.screen_size]
        n = self.spec.n_items
        scored = [m for m in self.pilot_models if self._scored(m, screen)]
        if not scored:  # nothing to screen on: a model mix, if it takes over, learns from every model's answers
            self.phase = "pilot_rest"
            return
        # every plan the screen can project: each model alone, and each behind a cheaper head as its second stage
        plans = [(self._one_pass(m, screen, spread=0.0)[1], {m}) for m in scored]
        for h in scored:
            for m in scored:
                if self.unit_cost(h) < self.unit_cost(m):
                    head_fee = n * self.unit_cost(h)
                    option = self._second_stage_option(h, self.score[screen, h], n, head_fee, screen, (m,))
                    if option is not None:
                        plans.append(((head_fee + option.expected_cost) / (1.0 - self.second_stage_margin), {h, m}))
        bar = self.screen_slack * min(cost for cost, _ in plans)
        keep = set().union(*(models for cost, models in plans if cost <= bar))
        self.screened_out = tuple(m for m in self.pilot_models if m not in keep)
        self.pilot_models = tuple(sorted(keep))
        self.phase = "pilot_rest"

    def _scored(self, m: int, items: np.ndarray) -> bool:
        return bool(len(items)) and float(np.mean(np.isfinite(self.score[items, m]))) >= self.min_scored

    def labels_rule(self, eligible: int) -> int:
        """Reference labels the certificate rests on: fixed before any label is seen (a function of N, T and
        how many items are scored), so the pilot's labels can be part of the certification sample.

        Above T = 0.9 the sample grows as 1/√(1 − T): the batch may hold fewer wrong answers, the sample sees
        fewer of them, and the certificate's budget of sampled wrong answers (prefix_test) gets coarse."""
        wrong_share = 1.0 - self.spec.guarantee.target
        scale = math.inf if wrong_share <= 0 else max(1.0, math.sqrt(self.full_scale_wrong_share / wrong_share))
        labels = self.labels_per_root * scale * math.sqrt(self.spec.n_items)
        return int(min(eligible, max(1, round(labels)) if math.isfinite(labels) else eligible))

    def _after_pilot(self) -> None:
        pilot = self.order[: self.pilot_size]
        n = self.spec.n_items
        reference_cost = self.unit_cost(self.reference)
        with_scores = [m for m in self.pilot_models if self._scored(m, pilot)]
        if not with_scores:
            self._delegate_to_mix("no candidate returned confidence scores: planned as the model mix")
            return
        # The pilot's labels choose the head and also join the certification sample: δ is split over the
        # heads it could choose (one, when the pilot could afford only the cheapest candidate).
        self.heads_considered = with_scores
        if self.reuse_pilot:
            self.alpha = self.spec.guarantee.delta / len(with_scores)
        options, stages, expected, rest = {}, {}, {}, n - self.pilot_size
        for m in with_scores:
            scores = self.score[pilot, m]
            sizes = [max(self.labels_rule(n), int(np.isfinite(scores).sum()))] if self.reuse_pilot else None
            labels, cost, kept = self._one_pass(m, pilot, sizes=sizes)
            options[m] = (cost, labels, kept, rest * self.unit_cost(m))
            if not self.reuse_pilot:
                stages[m] = self._second_stage_option(m, scores, n, n * self.unit_cost(m))
                expected[m] = self._one_pass(m, pilot, spread=0.0)[1]
        # A two-pass plan must beat every one-pass plan by the margin, both one deviation worse and at the
        # expected outcome: the best of many projections is optimistic, and the second pass's fee is certain.
        for m, stage in stages.items():
            if stage is not None and self._two_passes_pay(
                n * self.unit_cost(m), stage, min(o[0] for o in options.values()), min(expected.values())
            ):
                bet = rest * (self.unit_cost(m) + stage.share * self.unit_cost(stage.second))  # the go rule weighs both
                options[m] = (n * self.unit_cost(m) + stage.cost, stage.labels, stage.kept, bet)
        reference_only = n * reference_cost

        def pays(m: int) -> bool:
            return reference_only - options[m][0] >= self.go_factor * options[m][3]

        # the cheapest projection among the heads whose first pass pays; else the cheapest, to say why not
        head = min([m for m in options if pays(m)] or options, key=lambda m: options[m][0])
        cost, labels, kept, _ = options[head]
        self.projection = {
            "candidates": {self.spec.models[m]: round(options[m][0] / reference_only, 4) for m in options},
            "head": self.spec.models[head],
            "projected_cost_vs_reference": round(cost / reference_only, 4) if reference_only else None,
            "projected_kept": round(kept, 4),
            "planned_labels": labels,
        }
        if not pays(head):
            reason = (
                "the pilot projects no cascade saving more than its first pass costs at this batch size "
                f"(best: {self.spec.models[head]}, projected {cost / max(reference_only, 1e-300):.2f} of "
                "reference-only)"
            )
            if self.reuse_pilot or not self._delegate_to_profiled(reason):
                self._stop(reason)
            return
        self._start_first_pass(head)

    def _start_first_pass(self, head: int) -> None:
        self.head = head
        rest = self.order[self.pilot_size :]
        self.route_bar = self._route_bar(head)
        if math.isfinite(self.route_bar):
            routed = self.predicted[rest, head] < self.route_bar
            self.routed = np.sort(rest[routed])
            rest = rest[~routed]
        self.first_pass_items = rest
        self.phase = "first_pass" if len(self.first_pass_items) else "done"

    def _route_bar(self, head: int) -> float:
        """Cascade routing: the predicted agreement below which an item goes straight to the reference, without
        paying the head's call (the router's predictor, ``spec.predicted``); -inf: no routing.

        An item sent on costs the reference; kept in the cascade it costs the head, plus the reference unless
        kept. Sending it on pays when the chance it is kept is below the head's price as a share of the
        reference's. With a pilot outside the certificate, that chance is bounded from the pilot: the bar is
        the highest at which at least ``route_min`` pilot items fall below it and the one-sided 95% upper bound
        on the share of them the projected plan keeps is under the price ratio. With calibration data (no
        pilot), the bar is the price ratio itself, from the past data's prices. A pilot that joins the
        certificate routes nothing: the routed items leave the certified population, which must not depend on
        the sample. Routed items are answered by the reference, so they add no wrong answer.
        """
        if self.predicted is None or not np.isfinite(self.predicted[:, head]).any():
            return -math.inf
        if self.calibration is not None:
            return self._calibration_cost(head) / max(self._calibration_cost(self.reference), 1e-300)
        if self.reuse_pilot:
            return -math.inf
        ratio = self.unit_cost(head) / max(self._reference_cost(), 1e-300)
        pilot = self.order[: self.pilot_size]
        predicted, score = self.predicted[pilot, head], self.score[pilot, head]
        ok = np.isfinite(predicted)
        if ok.sum() < self.route_min:
            return -math.inf
        _, _, kept_share = self._one_pass(head, pilot, spread=0.0)
        scored = np.isfinite(score)
        if kept_share <= 0 or not scored.any():
            return -math.inf
        threshold = float(np.quantile(score[scored], max(0.0, 1.0 - kept_share)))
        kept = scored & (score >= threshold)
        predicted, kept = predicted[ok], kept[ok]
        order = np.argsort(predicted, kind="stable")
        predicted, kept_below = predicted[order], np.cumsum(kept[order])
        counts = np.arange(1, len(predicted) + 1)
        # a cut after ``count`` items routes the items strictly below the next value: ties go together or not at all
        cut = np.append(predicted[1:] > predicted[:-1], True)
        upper = binomial_upper(kept_below, counts, 0.05)
        fine = np.flatnonzero(cut & (counts >= self.route_min) & (upper < ratio))
        if not len(fine):
            return -math.inf
        count = int(counts[fine[-1]])
        return float(predicted[count]) if count < len(predicted) else math.inf

    def _after_first_pass(self) -> None:
        if self._order_population() and self._start_second_stage():
            return
        self._prepare_certification()

    # -- the order and its answers -------------------------------------------------------------------
    def _key(self, items: np.ndarray) -> np.ndarray:
        """Each item's key in the certified order (highest first); NaN: the item is not in it."""
        head_score = self.score[items, self.head]
        if self.second is None:
            return head_score
        return composite_key(head_score, self.score[items, self.second], self.split)

    def _answering(self, items: np.ndarray) -> np.ndarray:
        """The model whose answer an item keeps if the certified prefix reaches it."""
        if self.second is None:
            return np.full(len(items), self.head, dtype=np.int64)
        return np.where(self.score[items, self.head] > self.split, self.head, self.second)

    def _wrong(self, items: np.ndarray) -> np.ndarray:
        return ~self.agree[items, self._answering(items)]

    def _order_population(self) -> int:
        """Order the items to certify by key (ties by the random tie-break); returns how many there are."""
        eligible = np.isfinite(self._key(np.arange(self.spec.n_items)))
        if not self.reuse_pilot:
            eligible[self.order[: self.pilot_size]] = False  # the pilot only planned: it stays out
        eligible = np.flatnonzero(eligible)
        self.scored_order = eligible[np.lexsort((self.tiebreak[eligible], -self._key(eligible)))]
        return len(self.scored_order)

    def _start_second_stage(self) -> bool:
        """Send the items below a split of the head's scores to a second candidate when the pilot projects
        it cheaper than the head alone. Only with a pilot outside the certificate (it is what chooses), and
        only within the fee of the priciest candidate's pass over the batch, which the preview's upper figure
        counts."""
        if self.reuse_pilot or self.calibration is not None:
            return False
        head = self.head
        population = len(self.scored_order)
        head_fee = population * self.unit_cost(head)
        _, single, _ = self._replan(population, None)
        _, single_expected, _ = self._replan(population, None, spread=0.0)
        option = self._second_stage_option(head, self.score[self.scored_order, head], population, head_fee)
        if option is None or not self._two_passes_pay(head_fee, option, single, single_expected):
            return False
        second_items = self.scored_order[self.score[self.scored_order, head] <= option.split]
        if not len(second_items):
            return False
        self.second, self.split, self.second_items = option.second, option.split, second_items
        self.projection["second_stage"] = {
            "model": self.spec.models[option.second],
            "below_head_score": option.split,
            "share": round(option.share, 4),
            "projected_cost_vs_reference": round(
                (head_fee + option.cost) / max(population * self._reference_cost(), 1e-300), 4
            ),
            "head_alone_vs_reference": round(single / max(population * self._reference_cost(), 1e-300), 4),
        }
        self.phase = "second_pass"
        return True

    def _two_passes_pay(self, head_fee: float, stage, one_pass: float, one_pass_expected: float) -> bool:
        keep = 1.0 - self.second_stage_margin
        return head_fee + stage.cost < keep * one_pass and head_fee + stage.expected_cost < keep * one_pass_expected

    def _one_pass(self, m: int, items: np.ndarray, sizes: list[int] | None = None, spread: float | None = None):
        """(labels, cost, kept) of a one-pass cascade headed by ``m`` over the batch, projected from the
        labelled ``items`` (the pilot, or its screened part)."""
        s = self.score[items, m]
        ok = np.isfinite(s)
        return plan_sample(
            expected_rank_fraction(s[ok]), ~self.agree[items[ok], m], self.spec.n_items, self.allowed, self.alpha,
            self.unit_cost(m), self._reference_cost(), sizes=sizes, spread=spread,
        )

    def _second_stage_option(
        self, head: int, head_scores: np.ndarray, population: int, head_fee: float,
        items: np.ndarray | None = None, seconds: tuple[int, ...] | None = None,
    ):
        """The best second stage behind ``head`` among ``seconds`` (default: every pilot model), projected from
        the labelled ``items`` (default: the pilot) for ``population`` items whose head scores are
        ``head_scores`` (or a sample of them). None: no pricier scored model to consider."""
        pilot = self.order[: self.pilot_size] if items is None else items
        pilot_second = {
            m: (self.score[pilot, m], ~self.agree[pilot, m])
            for m in (self.pilot_models if seconds is None else seconds)
            if self.unit_cost(head) < self.unit_cost(m) and self._scored(m, pilot)
        }
        if not pilot_second:
            return None
        ceiling = self.spec.n_items * max(self.unit_cost(m) for m in self.spec.candidates) - head_fee
        return best_second_stage(
            self.score[pilot, head], ~self.agree[pilot, head], pilot_second, head_scores, self.allowed, self.alpha,
            {m: self.unit_cost(m) for m in pilot_second}, self._reference_cost(), ceiling, population=population,
        )

    def _prepare_certification(self) -> None:
        head = self.head
        n = self.spec.n_items
        population = self._order_population()
        if population == 0:
            self._stop("the cheap model returned no scores on the batch")
            return
        in_population = np.zeros(n, dtype=bool)
        in_population[self.scored_order] = True
        walk = self.order[in_population[self.order]]  # the scored items in the one random order
        if self.calibration is not None or not self.reuse_pilot:
            labels, cost, kept = self._replan(population, None)
        else:
            labels = max(self.labels_rule(population), int(self.labelled[self.scored_order].sum()))
            labels, cost, kept = self._replan(population, [labels])
        labels = sample_size(population, self.allowed, labels, self.alpha)  # its bound with room (prefix_test)
        self.planned_labels = labels
        self.projection.update({"replanned_labels": labels, "replanned_kept": round(kept, 4)})
        paid = population * self.unit_cost(head)
        if cost - paid >= population * self._reference_cost():
            # the first pass is paid: labels are bought only if they are expected to save more than they cost
            self._stop("after scoring every item, no certificate is expected to pay for its labels")
            return
        # The certification sample: the first ``labels`` scored items of the random order (the pilot's
        # scored items come first), a uniform sample without replacement of the scored items.
        self.sample = walk[:labels]
        missing = self.sample[~self.labelled[self.sample]]
        # each label is asked with the model whose answer the item would keep, so its agreement is known
        answering = self._answering(missing)
        self._to_label = [
            ProfileBatch(missing[answering == m], (m, self.reference))
            for m in (self.head, self.second)
            if m is not None and (answering == m).any()
        ]
        self.phase = "sample" if self._to_label else "done"

    def _replan(self, population: int, sizes: list[int] | None, spread: float | None = None) -> tuple[int, float, float]:
        """Project the certificate from the pilot's (or calibration) labels, placed among the batch's scores."""
        head = self.head
        if self.calibration is not None:
            past, wrong = self._calibration_columns(head)
        else:
            pilot = self.order[: self.pilot_size]
            past = self._key(pilot)
            ok = np.isfinite(past)
            past, wrong = past[ok], self._wrong(pilot[ok])
        position = expected_rank_fraction(past, self._key(self.scored_order))
        return plan_sample(
            position, wrong, population, self.allowed, self.alpha, self.unit_cost(head), self._reference_cost(),
            sizes=sizes, spread=spread,
        )

    def _stop(self, reason: str) -> None:
        self.fallback_reason = reason
        self.phase = "done"

    def _delegate_to_profiled(self, reason: str) -> bool:
        """Hand over to ``cascade-profiled`` on the pilot's models when, fed the pilot's answers, it projects a
        saving: it pays each stage only on the items that reach it, and certifies before the rest is spent.

        Only with a pilot kept out of the certificate: conditional on the pilot, both this policy's certificate
        and the delegate's hold at δ, and the hand-over is a function of the pilot alone.
        """
        from smartmix.policies.cascade import PilotedCascade

        self.delegate = PilotedCascade(self.spec, self.pilot_size, self.pilot_models)
        self._replay_known()  # the delegate's next_batch depends on its state only: asked again, it repeats
        if self.delegate.projected_rest() < self.delegate.rest * self.unit_cost(self.reference):
            self.fallback_reason = reason + "; cascade-profiled on the pilot's models projects a saving: it took over"
            return True
        self.delegate = None
        return False

    def _replay_known(self) -> ProfileBatch | None:
        """The delegate's next batch; the batches the probe and pilot already answered are fed from memory,
        never paid twice."""
        while (batch := self.delegate.next_batch()) is not None:
            if not self.called[np.ix_(np.asarray(batch.items), list(batch.models))].all():
                return batch
            self._feed(self.delegate, batch)
        return None

    def _feed(self, delegate: Policy, batch: ProfileBatch) -> None:
        """Give ``delegate`` the answers this policy already has for ``batch``, as the driver would."""
        grid = np.ix_(np.asarray(batch.items), list(batch.models))
        delegate.observe(batch, self.agree[grid], self.cost[grid], self.score[grid])

    def _delegate_to_mix(self, reason: str) -> None:
        from smartmix.policies.cascade import FallbackMix

        self.fallback_reason = reason
        delegate = FallbackMix(self.spec, self.pilot_size)
        # the mix walks the same random order; it learns from the probe and pilot but certifies after them
        probe = ProfileBatch(self.order[:1], (*self.spec.candidates, self.reference))
        pilot = ProfileBatch(self.order[1 : self.pilot_size], (*self.pilot_models, self.reference))
        for batch in (probe, pilot):
            if len(batch.items):
                self._feed(delegate, batch)
        rest = self.spec.n_items - self.pilot_size
        if delegate.projected_best() >= self.mix_margin * rest * self.unit_cost(self.reference):
            self._stop(reason + "; the model mix is not projected to pay at this batch size: the reference answers")
            return
        self.delegate = delegate

    # -- calibration ---------------------------------------------------------------------------------
    def _calibration_index(self, m: int) -> int | None:
        models = tuple(self.calibration.models)
        name = self.spec.models[m]
        return models.index(name) if name in models else None

    def _calibration_columns(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        j = self._calibration_index(m)
        score = np.asarray(self.calibration.score[:, j], dtype=float)
        ok = np.isfinite(score)
        return score[ok], ~np.asarray(self.calibration.agree[:, j], dtype=bool)[ok]

    def _calibration_cost(self, m: int) -> float:
        j = self._calibration_index(m)
        return float(np.nanmean(self.calibration.cost[:, j])) if j is not None else math.inf

    def _reference_cost(self) -> float:
        if self.calls[self.reference]:
            return self.unit_cost(self.reference)
        return self._calibration_cost(self.reference)

    def _choose_from_calibration(self) -> None:
        """Head and sample size from past data; the batch then certifies that one plan at the full δ."""
        self.pilot_size = 0
        reference_cost = self._calibration_cost(self.reference)
        n = self.spec.n_items
        options = {}
        for m in self.spec.candidates:
            if self._calibration_index(m) is None or not math.isfinite(reference_cost):
                continue
            past, wrong = self._calibration_columns(m)
            if len(past) < 10:
                continue
            cost = self._calibration_cost(m)
            n_sample, total, kept = plan_sample(
                expected_rank_fraction(past), wrong, n, self.allowed, self.spec.guarantee.delta, cost, reference_cost
            )
            options[m] = (total, n_sample, kept, cost)
        source = getattr(self.calibration, "source", "")
        if not options:
            self._stop(f"the calibration data ({source}) has no scored candidate of this pool")
            return
        reference_only = n * reference_cost

        def pays(m: int) -> bool:
            return reference_only - options[m][0] >= self.go_factor * n * options[m][3]

        head = min([m for m in options if pays(m)] or options, key=lambda m: options[m][0])
        total, n_sample, kept, cost = options[head]
        self.projection = {
            "calibration": source,
            "head": self.spec.models[head],
            "projected_cost_vs_reference": round(total / reference_only, 4) if reference_only else None,
            "planned_sample": n_sample,
        }
        if not pays(head):
            self._stop(f"the calibration data ({source}) projects no cascade saving at this batch size")
            return
        self._start_first_pass(head)

    # -- the plan ------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        if self.delegate is not None:
            plan = self.delegate.plan()
            plan.certificate.method = self.name
            plan.certificate.details["fallback_reason"] = self.fallback_reason
            plan.certificate.details["pilot_items"] = max(plan.certificate.details.get("pilot_items") or 0, self.pilot_size)
            plan.certificate.details["projection"] = self.projection
            return plan
        spec = self.spec
        assignment = np.full(spec.n_items, self.reference, dtype=np.int64)
        profiled = self.labelled.copy()  # the reference answered these during profiling
        kept = np.zeros(0, dtype=np.int64)
        prefix = 0
        if self.head is not None and len(self.scored_order) and self.fallback_reason is None:
            rank = np.empty(spec.n_items, dtype=np.int64)
            rank[self.scored_order] = np.arange(len(self.scored_order))
            prefix = certified_prefix(
                rank[self.sample],
                self._wrong(self.sample),
                len(self.scored_order),
                self.allowed,
                self.alpha,
            )
            top = self.scored_order[:prefix]
            kept = top[~self.labelled[top]]
            assignment[kept] = self._answering(kept)
            profiled[kept] = True
        return Plan(assignment, profiled, self._certificate(kept, prefix))

    def _budget(self) -> int | None:
        if not len(self.sample):
            return None
        budget = certificate_budget(len(self.scored_order), self.allowed, len(self.sample), self.alpha)
        return None if budget == UNLIMITED else budget

    def _certificate(self, kept: np.ndarray, prefix: int) -> Certificate:
        spec = self.spec
        names = spec.models
        n = max(1, spec.n_items)
        shares = {names[self.reference]: 1.0 - len(kept) / n}
        details: dict[str, Any] = {
            "order": "score first: the head model answered every item before any reference label was bought",
            "chain": [names[m] for m in (self.head, self.second) if m is not None] + [names[self.reference]],
            "bound": (
                "score order kept up to just before the (c+1)-th sampled wrong answer; c from the exact "
                f"hypergeometric bound on the unsampled wrong answers kept, at {CERTIFIED_SHARE} of alpha_per_test"
            ),
            "alpha_per_test": self.alpha,
            "heads_considered": [names[m] for m in self.heads_considered],
            "allowed_disagreements": self.allowed,
            "pilot_items": self.pilot_size,
            "pilot_models": [names[m] for m in self.pilot_models],
            "pilot_screened_out": {"after_items": self.screen_size, "models": [names[m] for m in self.screened_out]}
            if self.screened_out
            else None,
            "certification_labels": int(len(self.sample)),
            "wrong_answers_allowed_in_sample": self._budget(),
            "certified_prefix": int(prefix),
            "routed_to_reference": {
                "items": int(len(self.routed)),
                "below_predicted_agreement": self.route_bar,
                "rule": "cascade routing: the router predicted the head would fail; no head call was paid",
            }
            if len(self.routed)
            else None,
            "kept_items": int(len(kept)),
            "projection": self.projection,
            "fallback_reason": self.fallback_reason,
        }
        if self.head is not None and len(kept):
            answering = self._answering(kept)
            thresholds = {}
            for m in (self.head, self.second):
                mine = kept[answering == m] if m is not None else kept[:0]
                if len(mine):
                    shares[names[m]] = len(mine) / n
                    thresholds[names[m]] = float(np.min(self.score[mine, m]))
            details["threshold"] = thresholds.get(names[self.head], self.split)
            if self.second is not None:
                details["second_stage"] = {
                    "model": names[self.second],
                    "items": int(len(self.second_items)),
                    "below_head_score": self.split,
                    "thresholds": thresholds,
                }
        return Certificate(
            method=self.name,
            target=spec.guarantee.target,
            confidence=spec.guarantee.confidence,
            valid=True,
            n_items=spec.n_items,
            profiled=int(self.labelled.sum()),
            shares=shares,
            details=details,
        )
