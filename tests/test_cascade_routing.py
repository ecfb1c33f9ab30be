"""Cascade routing: items the router's predictor says the head fails go straight to the reference, without the
head's call; the certificate covers the rest exactly as before (validity at the edge: benchmarks/cascade_routing.py)."""

import numpy as np
import pytest

from smartmix.bench.data import ROUTING_PRICES, routing_batch
from smartmix.core.driver import execute, run_inline
from smartmix.core.offline import OfflineSource, simulate
from smartmix.policies import BatchSpec, Guarantee, make_policy

N = 10_000  # the smallest batch whose pilot (200 items = 2%) stays out of the certificate


def run(batch, predicted, target, seed):
    spec = BatchSpec(batch.n_items, batch.models, Guarantee(target, 0.95), seed=seed, predicted=predicted)
    source = OfflineSource(batch.agree, batch.cost, batch.score)
    return run_inline(execute(make_policy("cascade", spec), source)), source


@pytest.mark.parametrize("seed", [0, 1])
def test_predicted_failures_go_to_the_reference_without_the_head_call(seed):
    batch, predicted = routing_batch(N, 0.9, seed)
    routed_run, source = run(batch, predicted, 0.9, seed)
    plain_run, _ = run(batch, None, 0.9, seed)
    details = routed_run.certificate.details
    routing = details["routed_to_reference"]
    assert routing is not None and plain_run.certificate.details["routed_to_reference"] is None
    hard = predicted[:, 0] < 0.5
    pilot = details["pilot_items"]
    # every routed item is a hard one outside the pilot, and nearly all hard items outside it are routed
    routed = np.flatnonzero(routed_run.spent == ROUTING_PRICES[1])
    assert routing["items"] == len(routed) >= 0.95 * (hard.sum() - pilot)
    assert hard[routed].all()
    # each routed item paid the reference once and nothing else; it keeps the reference's answer
    assert (routed_run.final[routed] == 1).all()
    assert routed_run.cost < plain_run.cost
    assert source.agreeing(routed_run) >= Guarantee(0.9).required_agreeing(N)


def test_a_pilot_inside_the_certificate_routes_nothing():
    """Below about 10,000 items the pilot joins the certificate: the population it certifies must not depend
    on the sample, so no item is routed however sure the predictor is."""
    batch, predicted = routing_batch(3000, 0.9, 0)
    out = simulate("cascade", batch.agree, batch.cost, batch.models, Guarantee(0.9), seed=0, score=batch.score,
                   predicted=predicted)
    plain = simulate("cascade", batch.agree, batch.cost, batch.models, Guarantee(0.9), seed=0, score=batch.score)
    assert out.certificate.details["routed_to_reference"] is None
    assert out.cost == plain.cost and (out.plan.assignment == plain.plan.assignment).all()


def test_an_uninformative_predictor_routes_nothing():
    batch, _ = routing_batch(N, 0.9, 3)
    flat = np.stack([np.full(N, 0.8), np.full(N, np.nan)], axis=1)
    out = simulate("cascade", batch.agree, batch.cost, batch.models, Guarantee(0.9), seed=3, score=batch.score,
                   predicted=flat)
    plain = simulate("cascade", batch.agree, batch.cost, batch.models, Guarantee(0.9), seed=3, score=batch.score)
    assert out.certificate.details["routed_to_reference"] is None and out.cost == plain.cost


def test_routing_keeps_the_guarantee_at_the_edge_smoke():
    """Half a point below T once the hard items are routed: 40 trials (1,000 in the benchmark)."""
    hits = 0
    for seed in range(40):
        batch, predicted = routing_batch(N, 0.9, seed, below=0.005)
        out = simulate("cascade", batch.agree, batch.cost, batch.models, Guarantee(0.9), seed=seed + 1000,
                       score=batch.score, predicted=predicted)
        assert out.certificate.details["routed_to_reference"] is not None
        hits += out.hit(0.9)
    assert hits >= 36


def test_with_calibration_data_the_bar_is_the_past_price_ratio_and_small_batches_route_too():
    from smartmix.calibration import Calibration

    past, _ = routing_batch(3000, 0.9, 11)
    calibration = Calibration(models=past.models, agree=past.agree, cost=past.cost, score=past.score, source="past")
    batch, predicted = routing_batch(3000, 0.9, 12)
    options = (("calibration", calibration),)
    out = simulate("cascade", batch.agree, batch.cost, batch.models, Guarantee(0.9), seed=5, score=batch.score,
                   predicted=predicted, options=options)
    routing = out.certificate.details["routed_to_reference"]
    assert out.certificate.details["pilot_items"] == 0
    assert routing["below_predicted_agreement"] == pytest.approx(ROUTING_PRICES[0] / ROUTING_PRICES[1])
    assert routing["items"] == int((predicted[:, 0] < 0.25).sum())
    assert out.hit(0.9)


def recorded_file(path, n, seed):
    """A recorded-outputs file of a routing batch: the hard items' prompts say so, the head answers B where it
    disagrees with the reference's A, its confidence is the log of the batch's score."""
    import json
    import math

    batch, predicted = routing_batch(n, 0.9, seed)
    hard = predicted[:, 0] < 0.5
    with open(path, "w") as f:
        for i in range(n):
            kind = "a riddle with a trap in it" if hard[i] else "a plain sum"
            head = {"answer": "A" if batch.agree[i, 0] else "B", "cost_usd": 5e-5,
                    "confidence": math.log(max(float(batch.score[i, 0]), 1e-12))}
            ref = {"answer": "A", "cost_usd": 2e-4, "confidence": 0.0}
            f.write(json.dumps({"id": f"{seed}-{i}", "prompt": f"Item {seed}-{i}: {kind}.",
                                "outputs": {"head": head, "ref": ref}}) + "\n")
    return path, hard


def test_the_engine_routes_with_a_trained_predictor_and_pays_no_head_call_there(tmp_path):
    """End to end: `smartmix router train`'s predictor (hashing features) learns which prompts the head fails
    on a separate file; `smartmix.run(..., method="cascade", router=...)` on 10,000 recorded items then skips
    the head's call on them, and the answers written meet T against the reference's."""
    from rich.console import Console

    import smartmix
    from smartmix.report import render
    from smartmix.router.embedding import HashingEmbedder
    from smartmix.router.predictor import AgreementPredictor, train_from_recorded

    train, _ = recorded_file(tmp_path / "train.jsonl", 2000, 21)
    predictor = train_from_recorded([train], "ref", predictor=AgreementPredictor(HashingEmbedder()))
    router = predictor.save(tmp_path / "router.npz")
    path, hard = recorded_file(tmp_path / "batch.jsonl", N, 22)
    result = smartmix.run(path, reference="ref", target=0.9, method="cascade", router=router, seed=0)
    details = result.certificate.details
    routed = details["routed_to_reference"]["items"]
    assert routed >= 0.95 * (hard.sum() - details["pilot_items"])
    calls: dict[str, int] = {}
    for (model, _phase), count in result.ledger.calls.items():
        calls[model] = calls.get(model, 0) + count
    assert calls["head"] == N - routed  # the pilot and every item not routed, each once
    by_id = {item.id: item for item in result.items}
    assert sum(by_id[f"22-{i}"].answer == "A" for i in range(N)) >= Guarantee(0.9).required_agreeing(N)
    console = Console(record=True, width=200)
    render(result, console)
    assert f"Cascade routing: {routed:,} items" in console.export_text()
