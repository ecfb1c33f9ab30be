"""The screen of ``efficient`` and ``mix``: on large batches with several candidates, 120 labelled items after the
pricing pilot choose which candidates get a confidence sequence; those items stay out of every bound, and δ is
split over the candidates kept only (docs/guarantee.md, "How δ is spent"), read at the certified share of it
(``Profiler.certified_share``) like every sequence of these methods."""

import numpy as np
import pytest

from smartmix.core.offline import simulate, synthetic_pool
from smartmix.policies import BatchSpec, Guarantee, make_policy
from smartmix.policies.smart import Efficient, Mix

WEAK_AND_GOOD = ([0.45, 0.6, 0.84], [0.33, 0.33, 3, 10])  # two cheap weak candidates beside one good one


def drive(method: str, agree: np.ndarray, cost: np.ndarray, models: tuple[str, ...], target: float, seed: int):
    """Run a policy's profiling loop on arrays and return the policy (its internal state is what is checked)."""
    policy = make_policy(method, BatchSpec(agree.shape[0], models, Guarantee(target, 0.95), seed=seed))
    while (batch := policy.next_batch()) is not None:
        assert len(batch.items) <= policy.spec.batch_size  # the screen too is asked one batch at a time
        rows = np.ix_(batch.items, list(batch.models))
        policy.observe(batch, agree[rows], cost[rows])
    return policy


@pytest.mark.parametrize("method", ["efficient", "mix"])
def test_the_screen_keeps_the_good_candidate_and_gives_it_all_of_delta(method):
    assert Efficient.screen_items == 120  # on by default
    agree, cost, models = synthetic_pool(50_000, *WEAK_AND_GOOD)
    out = simulate(method, agree, cost, models, Guarantee(0.8), seed=3)
    details = out.certificate.details
    screen = details["screen"]
    assert screen["items"] == details["pilot_items"] == 130
    assert screen["screened"] == ["m0", "m1", "m2"]
    assert "m2" in screen["kept"] and "m0" not in screen["kept"]
    alphas = details["alpha_per_model"]
    assert set(alphas) == set(screen["kept"])
    assert sum(alphas.values()) == pytest.approx(details["certified_share"] * details["delta_split"]["models"])
    assert details["certified_share"] == 0.6
    assert out.realised_agreement >= 0.8
    assert out.shares.get("m2", 0) > 0.8


def test_the_screened_items_stay_out_of_the_bounds():
    agree, cost, models = synthetic_pool(50_000, *WEAK_AND_GOOD, seed=1)
    policy = drive("mix", agree, cost, models, 0.8, seed=7)
    assert policy.cert_start == 130
    assert 2 in policy.sequences and 0 not in policy.sequences  # the weakest never had a sequence
    assert policy.draws[0] == policy.cert_start  # asked on the pilot and the screen, then no more
    for m, sequence in policy.sequences.items():
        # the screen's items were asked of every kept model, only not counted in its bound
        assert sequence.draws == policy.cert_draws[m] == policy.draws[m] - policy.cert_start > 0


def test_splitting_delta_over_fewer_candidates_lowers_the_bill(monkeypatch):
    """The same batches with the screen switched off: every candidate keeps a third of δ to the end."""
    agree, cost, models = synthetic_pool(50_000, [0.7, 0.6, 0.785], [0.3, 0.3, 0.6, 10], seed=2)
    screened = [simulate("mix", agree, cost, models, Guarantee(0.8), seed=s).cost for s in range(3)]
    monkeypatch.setattr(Efficient, "screen_items", 0)
    assert Mix.screen_items == 0
    unscreened = [simulate("mix", agree, cost, models, Guarantee(0.8), seed=s) for s in range(3)]
    assert all("screen" not in out.certificate.details for out in unscreened)
    assert np.median(screened) < 0.97 * np.median([out.cost for out in unscreened])


@pytest.mark.parametrize(
    ("n_items", "rates", "costs"),
    [
        (5_000, *WEAK_AND_GOOD),  # the screen would be more than 1% of the batch
        (50_000, [0.84], [3, 10]),  # one candidate: nothing to choose
    ],
)
def test_no_screen_on_small_batches_or_with_one_candidate(n_items, rates, costs):
    agree, cost, models = synthetic_pool(n_items, rates, costs)
    out = simulate("mix", agree, cost, models, Guarantee(0.8), seed=0)
    assert "screen" not in out.certificate.details
    assert out.certificate.details["pilot_items"] <= 10


def test_a_screen_that_finds_nothing_worth_profiling_answers_with_the_reference_and_says_why():
    agree, cost, models = synthetic_pool(50_000, [0.3, 0.35], [1, 2, 10])
    out = simulate("efficient", agree, cost, models, Guarantee(0.9), seed=0)
    details = out.certificate.details
    assert details["screen"]["kept"] == []
    assert "no candidate's profiling was projected to pay" in details["fallback_reason"]
    assert out.certificate.profiled == 130
    assert out.savings > 0.99  # the screen's candidate calls are all it wasted


@pytest.mark.parametrize("method", ["efficient", "mix"])
def test_screened_methods_hold_at_the_edge(method):
    """Two candidates exactly at T and half a point below (20,000 items, 60 trials; the 1,000-trial runs are in
    benchmarks/results/validity/). The screen keeps one, which then carries all of the sequences' δ."""
    trials, hits, kept = 60, 0, 0
    for seed in range(trials):
        agree, cost, models = synthetic_pool(20_000, [0.9, 0.895], [1, 2, 10], seed=seed)
        out = simulate(method, agree, cost, models, Guarantee(0.9, 0.95), seed=10_000 + seed)
        hits += out.hit(0.9)
        kept += "screen" in out.certificate.details
    assert kept == trials
    assert hits / trials >= 0.95 - 1.96 * np.sqrt(0.95 * 0.05 / trials)


def test_the_engine_screens_a_recorded_batch_and_the_report_says_so(tmp_path):
    """Through the engine that spends money (replayed recorded outputs; the streamed replay plans the same): the
    weakest candidate is called on the pilot's and the screen's items only, once each, and the certificate panel
    names what the screen kept."""
    import json

    from rich.console import Console

    import smartmix
    from smartmix.report import render

    n = 15_000
    rng = np.random.default_rng(0)
    path = tmp_path / "batch.jsonl"
    rates = {"weak-a": 0.45, "weak-b": 0.6, "good": 0.9}
    prices = {"weak-a": 1e-6, "weak-b": 1e-6, "good": 3e-5, "ref": 1e-4}
    with open(path, "w") as f:
        for i in range(n):
            outputs = {m: {"answer": "A" if rng.random() < r else "B", "cost_usd": prices[m]} for m, r in rates.items()}
            outputs["ref"] = {"answer": "A", "cost_usd": prices["ref"]}
            f.write(json.dumps({"id": str(i), "prompt": f"Item {i}", "outputs": outputs}) + "\n")
    result = smartmix.run(path, reference="ref", target=0.8, method="mix", seed=0, stream=False)
    streamed = smartmix.run(path, reference="ref", target=0.8, method="mix", seed=0, stream=True)
    assert streamed.certificate.details["screen"] == result.certificate.details["screen"]
    assert streamed.total_cost == pytest.approx(result.total_cost)
    cert = result.certificate
    screen = cert.details["screen"]
    assert screen["items"] == 130 and "good" in screen["kept"] and "weak-a" not in screen["kept"]
    calls: dict[str, int] = {}
    for (model, _phase), count in result.ledger.calls.items():
        calls[model] = calls.get(model, 0) + count
    assert calls["weak-a"] == 130  # the pricing pilot and the screen, then never again
    assert calls["good"] > 130
    assert sum(item.answer == "A" for item in result.items) >= Guarantee(0.8).required_agreeing(n)
    console = Console(record=True, width=200)
    render(result, console)
    assert "Screen: the first 130 items" in console.export_text()
