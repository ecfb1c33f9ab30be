"""Cascades: the guaranteed chain and the published margin baseline."""

import math

import numpy as np
import pytest

from smartmix.core.offline import simulate, synthetic_pool, synthetic_scores
from smartmix.domain import Completion
from smartmix.policies import Guarantee
from smartmix.policies.cascade import ChainCurve, largest_admissible
from smartmix.scores import confidence_score, margin_from_top_logprobs
from smartmix.stats import hypergeom_upper


def scored_pool(n, rates, costs, separation, seed):
    agree, cost, models = synthetic_pool(n, rates, costs, seed=seed)
    score = synthetic_scores(agree, separation, seed=seed + 1)
    score[:, -1] = np.nan
    return agree, cost, models, score


def test_largest_admissible_is_the_edge_of_the_upper_bound():
    n, N, allowed, alpha = 1000, 50_000, 5_000, 0.005
    c = largest_admissible(n, N, allowed, alpha)
    assert hypergeom_upper(c, n, N, alpha) <= allowed < hypergeom_upper(c + 1, n, N, alpha)
    assert largest_admissible(10, 50_000, 10, 0.005) == -1


def test_chain_curve_thresholds_and_costs():
    agree = np.array([[True, True], [False, True], [True, True], [False, True]])
    score = np.array([[0.9, np.nan], [0.8, np.nan], [0.5, np.nan], [0.3, np.nan]])
    cost = np.array([[1.0, 10.0]] * 4)
    curve = ChainCurve.build((0,), 1, agree, score, cost)
    assert curve.threshold(0) == 0.8  # keep only the 0.9 item: no wrong answer kept
    assert curve.threshold(1) == 0.3
    assert curve.threshold(2) == -math.inf
    assert curve.unit_cost(0.8) == pytest.approx((4 * 1 + 3 * 10) / 4)
    assert curve.unit_cost(-math.inf) == pytest.approx(1.0)


def test_cascade_uses_an_informative_cheap_model():
    agree, cost, models, score = scored_pool(50_000, [0.85], [1, 20], separation=2.0, seed=0)
    mix = simulate("mix", agree, cost, models, Guarantee(0.9), seed=1, score=score)
    cascade = simulate("cascade", agree, cost, models, Guarantee(0.9), seed=1, score=score)
    assert cascade.hit(0.9) and mix.hit(0.9)
    assert cascade.savings > 1.3 * mix.savings
    assert cascade.plan.chain == (0,)
    assert cascade.certificate.details["chain"] == ["m0", "ref"]


def test_cascade_without_scores_falls_back_to_the_reference():
    agree, cost, models = synthetic_pool(5_000, [0.85], [1, 20])
    out = simulate("cascade", agree, cost, models, Guarantee(0.9), seed=0)
    assert out.hit(0.9) and out.plan.chain == ()
    assert out.certificate.details["models_without_scores"] == ["m0"]


def test_cascade_validity_smoke_at_the_edge():
    """Scores barely informative, agreement at the target: the hardest place for the threshold search."""
    trials, hits = 150, 0
    for seed in range(trials):
        agree, cost, models, score = scored_pool(5_000, [0.9, 0.88], [1, 2, 20], separation=0.3, seed=seed)
        hits += simulate("cascade", agree, cost, models, Guarantee(0.9), seed=seed, score=score).hit(0.9)
    assert hits / trials >= 0.95 - 1.96 * math.sqrt(0.95 * 0.05 / trials)


def test_margin_escalates_the_budgeted_share():
    agree, cost, models, score = scored_pool(5_000, [0.8], [1, 20], separation=1.5, seed=0)
    budget = 1 + 0.25 * 20
    out = simulate(
        "margin", agree, cost, models, Guarantee(0.9), seed=0, score=score,
        options=(("budget", budget), ("reference_cost", 20.0)),
    )
    assert out.shares["ref"] == pytest.approx(0.25, abs=0.02)
    assert not out.certificate.valid
    assert out.realised_agreement > 0.8 + 0.25 * 0.2  # escalating the least confident beats random


def test_margin_pools_spelling_variants_of_a_label():
    top = ((" True", math.log(0.5)), ("True", math.log(0.3)), (" False", math.log(0.2)))
    assert margin_from_top_logprobs(top) == pytest.approx(math.log(0.8 / 0.2))
    assert confidence_score(Completion("m", "True", top_logprobs=top)) == pytest.approx(0.75)
    assert confidence_score(Completion("m", "A", confidence=math.log(0.9))) == pytest.approx(0.9)
    assert math.isnan(confidence_score(Completion("m", "A")))
