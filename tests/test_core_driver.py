"""The driver's plan application on hand-checked cases: entry stages, per-stage thresholds, the tie rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smartmix.core.driver import execute, run_inline
from smartmix.core.offline import OfflineSource
from smartmix.policies import BatchSpec, Certificate, Guarantee, Plan
from smartmix.policies.base import Policy, ProfileBatch

NAN = math.nan
MODELS = ("m0", "m1", "ref")


class FixedPlan(Policy):
    """A policy that profiles nothing and returns a given chain plan (unregistered: no ``name``)."""

    def __init__(self, spec, chain, thresholds, entry):
        super().__init__(spec)
        self.chain, self.thresholds, self.entry = chain, thresholds, entry

    def next_batch(self):
        return None

    def observe(self, batch, agree, cost, score=None):
        raise AssertionError("nothing is profiled")

    def plan(self):
        n = self.spec.n_items
        certificate = Certificate("fixed", 0.9, 0.95, True, n, 0, shares={"m0": 1.0})
        return Plan(
            np.full(n, 2, dtype=np.int64), np.zeros(n, dtype=bool), certificate,
            chain=self.chain, thresholds=self.thresholds, entry=self.entry,
        )


def run(score, entry, thresholds=(0.5, 0.7), chunk=None):
    n = score.shape[0]
    agree = np.ones((n, 3), dtype=bool)
    cost = np.tile([1.0, 2.0, 10.0], (n, 1))
    source = OfflineSource(agree, cost, score)
    source.chunk = chunk
    policy = FixedPlan(BatchSpec(n, MODELS, Guarantee(0.9)), (0, 1), thresholds, entry)
    return run_inline(execute(policy, source))


SCORE = np.array([
    [0.9, NAN, NAN],  # enters at 0, m0 clears 0.5
    [0.5, 0.8, NAN],  # m0 exactly at its threshold: not kept; m1 clears 0.7
    [0.9, 0.7, NAN],  # enters at 1 (m0 never asked), m1 exactly at 0.7: to the reference
    [NAN, NAN, NAN],  # no scores: NaN never keeps, up to the reference
    [0.9, 0.9, NAN],  # enters at 2: straight to the reference, no cheap call paid
    [0.1, 0.9, NAN],  # enters at 1: m1 keeps
])
ENTRY = np.array([0, 0, 1, 0, 2, 1])


@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_entry_stages_per_stage_thresholds_and_the_strict_tie_rule(chunk):
    ex = run(SCORE, ENTRY, chunk=chunk)
    assert ex.final.tolist() == [0, 1, 2, 2, 2, 1]
    assert ex.spent.tolist() == [1.0, 3.0, 12.0, 13.0, 10.0, 2.0]
    assert ex.cost == 41.0 and ex.profiling_cost == 0.0
    # the certificate reports who answered, not what the policy planned
    assert ex.certificate.shares == {"m0": 1 / 6, "m1": 2 / 6, "ref": 3 / 6}
    assert ex.certificate.details["planned_shares"] == {"m0": 1.0}


def test_without_entry_every_item_starts_at_the_first_stage():
    ex = run(SCORE, None)
    assert ex.final.tolist() == [0, 1, 0, 2, 0, 1]
    assert ex.spent.tolist() == [1.0, 3.0, 1.0, 13.0, 1.0, 3.0]


def test_thresholds_differ_per_stage():
    ex = run(SCORE, None, thresholds=(0.95, 0.0))
    # m0 keeps nothing at 0.95; m1 keeps every score above 0.0
    assert ex.final.tolist() == [2, 1, 1, 2, 1, 1]


class FailingSource(OfflineSource):
    """Arrays, except that the calls in ``fail`` (item, model) give no answer (and cost nothing)."""

    def __init__(self, agree, cost, score, fail):
        super().__init__(agree, cost, score)
        self.fail = fail

    async def answer(self, items, models):
        got = await super().answer(items, models)
        failed = np.array([(int(i), int(m)) in self.fail for i, m in zip(items, models, strict=True)])
        return type(got)(np.where(failed, 0.0, got.cost), np.where(failed, np.nan, got.score), failed)


def test_a_failed_stage_moves_the_item_up_and_a_failed_reference_fails_the_item():
    n = 4
    score = np.array([[0.9, NAN, NAN]] * n)
    source = FailingSource(np.ones((n, 3), dtype=bool), np.tile([1.0, 2.0, 10.0], (n, 1)), score, {(1, 0), (2, 0), (2, 2)})
    policy = FixedPlan(BatchSpec(n, MODELS, Guarantee(0.9)), (0, 1), (0.5, 0.7), None)
    ex = run_inline(execute(policy, source))
    # item 1: m0 failed, m1 has no score, the reference answers; item 2: the reference failed too
    assert ex.final.tolist() == [0, 2, 2, 0] and ex.failed.tolist() == [False, False, True, False]
    assert ex.spent.tolist() == [1.0, 12.0, 2.0, 1.0]
    cert = ex.certificate
    assert cert.shares == {"m0": 0.5, "ref": 0.25, "(failed)": 0.25}
    assert cert.target == pytest.approx(0.9 - 0.25) and cert.details["requested_target"] == 0.9


class TwoPasses(FixedPlan):
    """Profiles items 0 and 1 with m0 alone, then again with m0 and the reference."""

    def __init__(self, spec):
        super().__init__(spec, (), (), None)
        self.batches = [ProfileBatch(np.array([0, 1]), (0,)), ProfileBatch(np.array([0, 1]), (0, 2))]
        self.seen = []

    def next_batch(self):
        return self.batches.pop(0) if self.batches else None

    def observe(self, batch, agree, cost, score=None):
        self.seen.append(cost.tolist())

    def plan(self):
        plan = super().plan()
        plan.profiled[:2] = True
        return plan


def test_a_pair_profiled_twice_is_paid_once():
    policy = TwoPasses(BatchSpec(3, MODELS, Guarantee(0.9)))
    source = OfflineSource(np.ones((3, 3), dtype=bool), np.tile([1.0, 2.0, 10.0], (3, 1)))
    ex = run_inline(execute(policy, source))
    assert policy.seen == [[[1.0], [1.0]], [[0.0, 10.0], [0.0, 10.0]]]
    assert ex.profiling_cost == 22.0 and ex.spent.tolist() == [11.0, 11.0, 10.0]
