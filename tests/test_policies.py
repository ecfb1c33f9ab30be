"""Policies on synthetic data: decisions, plans and the guarantee, with no backend at all."""

import math

import numpy as np
import pytest

from smartmix.core.offline import simulate, synthetic_pool
from smartmix.errors import ConfigError
from smartmix.policies import METHODS, BatchSpec, Guarantee, make_policy


def test_registry_has_all_methods():
    assert {"reference", "exhaustive", "efficient", "mix", "paper"} <= set(METHODS)
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        make_policy("nope", BatchSpec(10, ("a", "b"), Guarantee(0.9)))


def test_reference_only_answers_everything_with_the_reference():
    agree, cost, models = synthetic_pool(500, [0.95], [1, 10])
    out = simulate("reference", agree, cost, models, Guarantee(0.9))
    assert out.realised_agreement == 1.0 and out.savings == pytest.approx(1.0)
    assert out.certificate.profiled == 0


@pytest.mark.parametrize("method", ["exhaustive", "efficient", "mix"])
def test_a_good_cheap_model_is_found_and_used(method):
    agree, cost, models = synthetic_pool(20_000, [0.97, 0.99], [1, 3, 30])
    out = simulate(method, agree, cost, models, Guarantee(0.9, 0.95), seed=3)
    assert out.realised_agreement >= 0.9
    assert out.savings > 5
    assert out.shares.get("m0", 0) > 0.8
    assert out.certificate.valid and out.certificate.bounds["m0"] >= 0.9 - 0.02


@pytest.mark.parametrize("method", ["exhaustive", "efficient", "mix"])
def test_hopeless_models_fall_back_to_the_reference(method):
    agree, cost, models = synthetic_pool(5_000, [0.3, 0.5], [1, 2, 10])
    out = simulate(method, agree, cost, models, Guarantee(0.95), seed=1)
    assert out.realised_agreement >= 0.95
    assert out.shares.get("ref", 0) > 0.9


@pytest.mark.parametrize("method", ["exhaustive", "efficient", "mix"])
def test_a_large_batch_certifies_a_model_a_few_points_above_the_target(method):
    """On 50,000 items a model at 0.84 (three-tenths of the reference's price) is certified at T = 0.8 after
    a few thousand draws: the bets are tuned to the sample at hand, not to the first look's."""
    agree, cost, models = synthetic_pool(50_000, [0.84], [3, 10])
    out = simulate(method, agree, cost, models, Guarantee(0.8), seed=4)
    assert out.realised_agreement >= 0.8
    assert out.certificate.profiled < 8_000
    assert out.savings > 2.3


def test_exhaustive_spends_its_allowance_on_the_model_worth_waiting_for():
    """The cheapest model agrees on 0.785 < T = 0.8: it can only be used once enough items are answered by the
    reference during profiling (about 7,000 of 50,000). A dearer model at 0.775 must not eat the profiling
    allowance meanwhile, and the bets must be tuned to the sample where the bound is read."""
    agree, cost, models = synthetic_pool(50_000, [0.785, 0.775, 0.6], [0.6, 3.5, 3.5, 10])
    out = simulate("exhaustive", agree, cost, models, Guarantee(0.8), seed=0)
    assert out.realised_agreement >= 0.8
    assert out.shares.get("m0", 0) > 0.8
    assert out.savings > 4.0


def test_mix_stops_profiling_once_the_plan_it_has_is_as_good_as_more_looks_would_make_it():
    """Cheap weak models beside one good one: the mix certifies the good one and stops, instead of buying
    labels for ever to shift a few items onto the weak ones."""
    agree, cost, models = synthetic_pool(50_000, [0.45, 0.6, 0.67, 0.84], [0.33, 0.33, 0.67, 3, 10])
    out = simulate("mix", agree, cost, models, Guarantee(0.8), seed=5)
    assert out.realised_agreement >= 0.8
    assert out.certificate.profiled < 10_000
    assert out.savings > 2.3


def test_mix_beats_single_models_when_no_cheap_model_reaches_the_target():
    agree, cost, models = synthetic_pool(50_000, [0.85], [1, 20])
    single = simulate("efficient", agree, cost, models, Guarantee(0.9), seed=2)
    mixed = simulate("mix", agree, cost, models, Guarantee(0.9), seed=2)
    assert mixed.realised_agreement >= 0.9
    assert mixed.cost < single.cost
    assert 0 < mixed.shares["m0"] < 1


def test_mix_split_carries_its_exact_margin_and_beats_hoeffding():
    agree, cost, models = synthetic_pool(50_000, [0.85], [1, 20])
    out = simulate("mix", agree, cost, models, Guarantee(0.9), seed=2)
    cert = out.certificate
    rest = cert.n_items - cert.profiled
    margin_items = cert.margin * rest
    assert margin_items > 0  # a genuine split of the rest between m0 and the reference
    hoeffding = math.sqrt(rest * math.log(1 / cert.details["delta_split"]["assignment"]) / 2)
    assert margin_items < 0.5 * hoeffding
    assert cert.details["certified_agreeing"] >= cert.details["required_agreeing"] - 1e-6


def test_mix_assigns_the_rest_at_random_not_in_blocks():
    agree, cost, models = synthetic_pool(20_000, [0.85], [1, 20])
    out = simulate("mix", agree, cost, models, Guarantee(0.9), seed=4)
    rest = np.flatnonzero(~out.plan.profiled)
    chosen = out.plan.assignment[rest]
    first, second = chosen[: len(chosen) // 2], chosen[len(chosen) // 2 :]
    assert abs((first == 0).mean() - (second == 0).mean()) < 0.05  # both halves mix the models


def test_unit_costs_come_from_each_models_own_calls():
    agree, cost, models = synthetic_pool(20_000, [0.3, 0.97], [1, 2, 30])
    spec = BatchSpec(20_000, models, Guarantee(0.9), seed=0)
    policy = make_policy("efficient", spec)
    while (batch := policy.next_batch()) is not None:
        cols = list(batch.models)
        policy.observe(batch, agree[np.ix_(batch.items, cols)], cost[np.ix_(batch.items, cols)])
    assert policy.draws[0] < policy.draws[2]  # the hopeless model was dropped early
    assert policy.unit_cost(0) == pytest.approx(1.0)
    assert policy.unit_cost(1) == pytest.approx(2.0)


def test_no_nan_when_a_cheap_model_always_agrees():
    agree, cost, models = synthetic_pool(20_000, [1.0], [1, 30])
    for method in ("exhaustive", "efficient", "mix"):
        out = simulate(method, agree, cost, models, Guarantee(0.98), seed=0)
        assert out.savings > 10, method
        assert all(np.isfinite(list(out.certificate.bounds.values())))


def test_same_seed_same_plan():
    agree, cost, models = synthetic_pool(5_000, [0.88, 0.93], [1, 2, 10])
    a = simulate("mix", agree, cost, models, Guarantee(0.9), seed=7)
    b = simulate("mix", agree, cost, models, Guarantee(0.9), seed=7)
    assert np.array_equal(a.plan.assignment, b.plan.assignment) and a.cost == b.cost


def test_paper_method_is_flagged_as_not_guaranteed():
    agree, cost, models = synthetic_pool(5_000, [0.92], [1, 10])
    out = simulate("paper", agree, cost, models, Guarantee(0.9), seed=0)
    assert not out.certificate.valid
    assert "No guarantee" in out.certificate.statement()


def test_paper_splits_the_rest_in_contiguous_blocks():
    agree, cost, models = synthetic_pool(5_000, [0.88], [1, 10])
    out = simulate("paper", agree, cost, models, Guarantee(0.9), seed=0)
    rest = np.flatnonzero(~out.plan.profiled)
    chosen = out.plan.assignment[rest]
    changes = np.count_nonzero(np.diff(chosen))
    assert changes <= len(models) - 1


@pytest.mark.parametrize("method", ["exhaustive", "efficient", "mix"])
def test_the_sequences_are_read_at_the_certified_share_of_delta(method):
    """A sequence read as soon as it crosses is nearly exact at the edge: the bounds keep room below δ."""
    agree, cost, models = synthetic_pool(5_000, [0.84, 0.86], [1, 3, 10])
    out = simulate(method, agree, cost, models, Guarantee(0.8), seed=3)
    details = out.certificate.details
    assert details["certified_share"] == 0.6
    split = details["delta_split"]
    assert sum(details["alpha_per_model"].values()) == pytest.approx(0.6 * split["models"])
    assert split["models"] + split["assignment"] == pytest.approx(0.05)
