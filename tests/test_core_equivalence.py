"""One execution core: every method, on real recorded outputs, run live and offline, decides and spends alike.

Live: the engine replays the recorded answers through its whole call path (concurrency, a real SQLite
journal written before each answer is used, pricing, the comparator). Offline: the arrays the benchmarks
and validity runs use (``RecordedOutputs.arrays`` with the recorded confidence as score). Both go through
the same driver; this test requires identical plans, per-item answers, certificates and costs.
"""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

from smartmix.api import predict_agreement, replay_job
from smartmix.backends.replay import RecordedOutputs
from smartmix.core.chain import keeps
from smartmix.core.driver import execute, run_inline
from smartmix.core.offline import OfflineSource, simulate
from smartmix.engine import Engine, EngineOptions
from smartmix.journal import Journal
from smartmix.policies import BatchSpec, Certificate, Guarantee, Plan, make_policy
from smartmix.scores import score_from_logprob

N_ITEMS = 600
SEEDS = (0, 1, 2)
METHODS = ("reference", "exhaustive", "efficient", "mix", "cascade", "cascade-profiled", "router", "paper", "margin")
SETS = {"mmlu-qwen-oai": ("gpt-4o", 0.8), "triviaqa-llama": ("llama3.1-405b", 0.85)}


def subsample(src, dst, n, seed):
    """``n`` items of a recorded file whose (system, prompt) is unique: the journal rightly answers identical
    requests once, while the arrays hold each item's own recorded answer."""
    rows = [json.loads(line) for line in open(src)]
    seen: dict = {}
    for row in rows:
        key = (row.get("system"), row["prompt"])
        seen[key] = seen.get(key, 0) + 1
    unique = [row for row in rows if seen[(row.get("system"), row["prompt"])] == 1]
    keep = np.random.default_rng(seed).choice(len(unique), n, replace=False)
    with open(dst, "w") as f:
        for k in sorted(keep):
            f.write(json.dumps(unique[k]) + "\n")
    return dst


@pytest.fixture(scope="module", params=sorted(SETS))
def recorded(request, shared_data, tmp_path_factory):
    name = request.param
    reference, target = SETS[name]
    tmp = tmp_path_factory.mktemp(name)
    path = subsample(shared_data / name / "test.jsonl", tmp / "items.jsonl", N_ITEMS, seed=7)
    job = replay_job(path, reference=reference)
    models = tuple(job.pool.names)
    arrays = RecordedOutputs.load(path).arrays(models, reference, job.comparator, job.pool)
    score = score_from_logprob(arrays.confidence)  # as the benchmarks score; the live path scores each completion
    router, predicted = router_predictions(shared_data / name / "train.jsonl", path, reference, tmp)
    return {
        "name": name, "path": path, "models": models, "arrays": arrays, "score": score, "target": target,
        "predicted": predicted, "router": router, "journal": tmp / "journal.sqlite", "reference": reference,
    }


def router_predictions(train, path, reference, tmp):
    """A real predictor (hashing features, fitted on the train split), applied as ``smartmix run --router``."""
    from smartmix.router.embedding import HashingEmbedder
    from smartmix.router.predictor import AgreementPredictor, train_from_recorded

    predictor = train_from_recorded([train], reference, predictor=AgreementPredictor(HashingEmbedder(), Cs=(1.0,), cv=2))
    saved = predictor.save(tmp / "router.npz")
    return saved, predict_agreement(saved, replay_job(path, reference=reference))


def live(recorded, method, seed):
    job = replay_job(recorded["path"], reference=recorded["reference"])
    run_id = f"{method}-{seed}"
    with Journal(recorded["journal"]) as journal:
        journal.start_run(run_id, {"method": method}, seed)
        options = EngineOptions(concurrency=8, chunk=128, use_cache=False)
        engine = Engine(job.backend, job.pool, job.template, job.comparator, options=options, journal=journal, run_id=run_id)
        predicted = recorded["predicted"] if method == "router" else None
        guarantee = Guarantee(recorded["target"], 0.95)
        result = asyncio.run(engine.run(job.items, method, guarantee, seed=seed, predicted=predicted))
        journaled = journal.calls(run_id)
    return result, engine, journaled


def offline(recorded, method, seed):
    arrays = recorded["arrays"]
    spec = BatchSpec(
        N_ITEMS, recorded["models"], Guarantee(recorded["target"], 0.95), seed=seed,
        predicted=recorded["predicted"] if method == "router" else None,
    )
    source = OfflineSource(arrays.agree, arrays.cost, recorded["score"])
    return run_inline(execute(make_policy(method, spec), source)), source


def assert_same_plan(a: Plan, b: Plan):
    np.testing.assert_array_equal(a.assignment, b.assignment)
    np.testing.assert_array_equal(a.profiled, b.profiled)
    assert a.chain == b.chain and a.thresholds == b.thresholds
    assert (a.entry is None) == (b.entry is None)


def assert_same_certificate(a: Certificate, b: Certificate):
    assert json.dumps(a.__dict__, sort_keys=True, default=repr) == json.dumps(b.__dict__, sort_keys=True, default=repr)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", METHODS)
def test_live_and_offline_execute_alike(recorded, method, seed):
    result, engine, journaled = live(recorded, method, seed)
    execution, source = offline(recorded, method, seed)
    models, arrays = recorded["models"], recorded["arrays"]

    assert_same_plan(engine.execution.plan, execution.plan)
    assert_same_certificate(result.certificate, execution.certificate)
    # the same model answers each item, with that model's recorded answer, at the same cost
    assert [r.model for r in result.items] == [models[m] for m in execution.final]
    assert [r.cost for r in result.items] == execution.spent.tolist()
    assert result.total_cost == pytest.approx(execution.cost, rel=1e-12)
    phases = engine.ledger.by_phase()
    assert phases.get("profiling", 0.0) == pytest.approx(execution.profiling_cost, rel=1e-12, abs=1e-15)
    assert phases.get("application", 0.0) == pytest.approx(execution.application_cost, rel=1e-12, abs=1e-15)
    assert not any(r.error for r in result.items)
    recorded_outputs = RecordedOutputs.load(recorded["path"])
    for r in result.items:
        assert r.answer == (recorded_outputs.output(r.id, r.model).answer or "").strip()
    # realised agreement judged on the live answers equals the offline count
    comparator = replay_job(recorded["path"], reference=recorded["reference"]).comparator
    reference_answers = [recorded_outputs.output(r.id, recorded["reference"]).answer for r in result.items]
    agreeing = sum(comparator.agree(r.answer, ref) for r, ref in zip(result.items, reference_answers, strict=True))
    assert agreeing == source.agreeing(execution)
    # every paid call reached the journal, and the journal holds exactly the bill
    assert len(journaled) == sum(engine.ledger.calls.values())
    assert sum(c["cost_usd"] for c in journaled) == pytest.approx(result.total_cost, rel=1e-12)
    # simulate() is this same execution
    outcome = simulate(
        method, arrays.agree, arrays.cost, models, Guarantee(recorded["target"], 0.95), seed=seed,
        score=recorded["score"], predicted=recorded["predicted"] if method == "router" else None,
    )
    assert outcome.cost == execution.cost and outcome.shares == execution.certificate.shares
    assert outcome.realised_agreement == agreeing / N_ITEMS


def test_the_comparison_covers_chains_mixes_and_application(recorded):
    """The equivalence above is not vacuous: on these sets some plans apply a chain, some split the rest
    among several models, and most answer items after profiling."""
    chains = splits = applied = 0
    for method in ("cascade", "cascade-profiled", "mix", "efficient", "router"):
        for seed in SEEDS:
            execution, _ = offline(recorded, method, seed)
            plan = execution.plan
            chains += bool(plan.chain)
            rest = plan.assignment[~plan.profiled]
            splits += len(set(rest.tolist())) > 1
            applied += int((~plan.profiled).sum()) > 0
    assert applied >= 6 and (chains or splits)


def test_realised_shares_not_planned_ones(recorded):
    """A cascade's certificate says who really answered (the policy's estimate is kept in the details)."""
    for seed in SEEDS:
        execution, _ = offline(recorded, "cascade", seed)
        counts = np.bincount(execution.final, minlength=len(recorded["models"]))
        expected = {recorded["models"][m]: counts[m] / N_ITEMS for m in np.flatnonzero(counts)}
        assert execution.certificate.shares == pytest.approx(expected)
        assert sum(execution.certificate.shares.values()) == pytest.approx(1.0)


def test_keeps_is_strict_and_nan_never_keeps():
    assert keeps(0.9, 0.8) and not keeps(0.8, 0.8) and not keeps(math.nan, -math.inf) and not keeps(None, 0.0)
    got = keeps(np.array([0.9, 0.8, np.nan, -np.inf]), 0.8)
    assert got.tolist() == [True, False, False, False]
    assert keeps(np.array([0.5, 0.5]), np.array([0.4, 0.5])).tolist() == [True, False]


@pytest.mark.parametrize("method", ["cascade", "router"])
def test_a_run_leaves_the_callers_options_as_they_were(recorded, method):
    """The engine asks for logprobs on its own copy of the settings; the router's predictions travel in the
    policy's batch spec, not in the caller's method options."""
    from smartmix.api import arun

    options = EngineOptions(params={"max_tokens": 8}, method_options={})
    with Journal(recorded["journal"]) as journal:
        journal.start_run(f"options-{method}", {}, 0)
        result = asyncio.run(arun(
            recorded["path"], reference=recorded["reference"], target=recorded["target"], method=method,
            options=options, journal=journal, run_id=f"options-{method}", router=recorded["router"],
        ))
        calls = journal.calls(f"options-{method}")
    assert options.params == {"max_tokens": 8} and options.method_options == {}
    assert len(result.items) == N_ITEMS and calls
    execution, _ = offline(recorded, method, 0)
    assert [r.model for r in result.items] == [recorded["models"][m] for m in execution.final]
