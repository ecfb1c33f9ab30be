"""The score-first cascade: the prefix test against exact computation and simulation, the never-worse gate,
calibration chosen from a separate file, the hand-over, the second stage, and validity smokes at the edge."""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from smartmix.core.offline import simulate, synthetic_pool, synthetic_scores
from smartmix.policies import Guarantee
from smartmix.policies.prefix_test import (
    CERTIFIED_SHARE,
    UNLIMITED,
    certified_prefix,
    expected_rank_fraction,
    plan_sample,
    sample_size,
    wrong_budget,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def brute_budget(population, allowed, draws, alpha):
    """The largest c with P(X_j <= j) <= alpha for every j <= c (X_j: draws from population, allowed + 1 + j
    marked), by scipy one j at a time; None when every possible j passes."""
    c = -1
    for j in range(0, min(draws, population - allowed - 1) + 1):
        if stats.hypergeom.cdf(j, population, allowed + 1 + j, draws) > alpha:
            return c
        c = j
    return None


def brute_prefix(ranks, wrong, population, allowed, alpha):
    """Walk the order item by item; stop just before the (c + 1)-th sampled wrong answer (never before allowed)."""
    if population <= allowed:
        return population
    c = brute_budget(population, allowed, len(ranks), CERTIFIED_SHARE * alpha)
    if c is None:
        return population
    if c < 0:  # not even a sample without a wrong answer would be evidence enough
        return allowed
    bad = np.zeros(population, dtype=bool)
    bad[ranks[wrong]] = True
    seen = 0
    for k in range(population):
        if bad[k]:
            seen += 1
            if seen > c:
                return max(allowed, k)
    return population


def _bootstrap_file(shared_data, name: str, n: int, seed: int, path: Path) -> Path:
    """``n`` recorded items of one shared set drawn with replacement, ids made unique."""
    import json
    import random

    rows = [json.loads(line) for line in (shared_data / name / "test.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    with path.open("w") as f:
        for k in range(n):
            row = dict(rng.choice(rows))
            row["id"] = f"{row['id']}#{k}"
            f.write(json.dumps(row) + "\n")
    return path


def _calls_per_model(result) -> dict[str, int]:
    calls: dict[str, int] = {}
    for (model, _phase), n in result.ledger.calls.items():
        calls[model] = calls.get(model, 0) + n
    return calls


def _agreement_with_recorded(result, path: Path, reference: str) -> float:
    """Share of the answers written that equal the reference's recorded answer."""
    import json

    from smartmix.tasks import ExactComparator

    recorded = {}
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            recorded[row["id"]] = row["outputs"][reference]["answer"]
    df = result.to_pandas()
    comparator = ExactComparator()
    agree = [comparator.agree(a, recorded[i]) for i, a in zip(df["id"], df["answer"], strict=True)]
    return sum(agree) / len(agree)


@pytest.mark.parametrize("seed", range(12))
def test_certified_prefix_matches_testing_every_prefix(seed):
    rng = np.random.default_rng(seed)
    population = int(rng.integers(30, 160))
    allowed = int(rng.integers(0, population // 3))
    n = int(rng.integers(0, population))
    ranks = rng.choice(population, n, replace=False)
    wrong = rng.random(n) < np.linspace(0.02, 0.5, population)[ranks]  # more wrong answers lower down
    alpha = float(rng.choice([0.01, 0.05, 0.2]))
    assert certified_prefix(ranks, wrong, population, allowed, alpha) == brute_prefix(ranks, wrong, population, allowed, alpha)


def test_wrong_budget_matches_scipy_one_value_at_a_time():
    rng = np.random.default_rng(1)
    for _ in range(200):
        population = int(rng.integers(1, 3000))
        allowed = int(rng.integers(0, population + 1))
        draws = int(rng.integers(0, population + 1))
        alpha = float(rng.choice([0.01, 0.035, 0.05, 0.2]))
        expected = brute_budget(population, allowed, draws, alpha)
        assert wrong_budget(population, allowed, draws, alpha) == (UNLIMITED if expected is None else expected)


@pytest.mark.parametrize(
    ("population", "allowed", "draws", "placement"),
    [(400, 40, 60, "top"), (400, 40, 60, "spread"), (1000, 100, 126, "top"), (300, 15, 69, "top")],
)
def test_certificate_fails_at_most_its_exact_bound(population, allowed, draws, placement):
    """Wrong answers beyond what the batch may hold, at the top of the order (where the bound is reached
    exactly) or spread through it: over 3,000 samples the certified prefix holds more than ``allowed`` wrong
    answers no more often than the exact bound P(X_c <= c) allows, and that bound is within the certificate's
    share of alpha."""
    rng = np.random.default_rng(population + draws)
    alpha, trials = 0.05, 3000
    c = wrong_budget(population, allowed, draws, CERTIFIED_SHARE * alpha)
    wrong_count = allowed + c + 1 + 30
    wrong_items = np.zeros(population, dtype=bool)
    if placement == "top":
        wrong_items[:wrong_count] = True
    else:
        wrong_items[rng.choice(population, wrong_count, replace=False)] = True
    bound = float(stats.hypergeom.cdf(c, population, allowed + 1 + c, draws))
    assert bound <= CERTIFIED_SHARE * alpha
    failures = 0
    for _ in range(trials):
        ranks = rng.choice(population, draws, replace=False)
        prefix = certified_prefix(ranks, wrong_items[ranks], population, allowed, alpha)
        sampled = np.zeros(population, dtype=bool)
        sampled[ranks] = True
        failures += int((wrong_items[:prefix] & ~sampled[:prefix]).sum()) > allowed
    slack = 3 * math.sqrt(bound * (1 - bound) / trials)
    assert failures / trials <= bound + slack
    if placement == "top":  # the bound is reached: the test is exact, not merely safe
        assert failures / trials >= bound - slack


def test_agreement_exactly_at_the_target_never_fails():
    """A cheap model with exactly ``allowed`` wrong answers can never break the guarantee, wherever they sit."""
    rng = np.random.default_rng(3)
    population, allowed, draws = 500, 50, 90
    for _ in range(300):
        wrong_items = np.zeros(population, dtype=bool)
        wrong_items[rng.choice(population, allowed, replace=False)] = True
        ranks = rng.choice(population, draws, replace=False)
        prefix = certified_prefix(ranks, wrong_items[ranks], population, allowed, 0.05)
        assert wrong_items[:prefix].sum() <= allowed


def test_sample_size_buys_the_full_level_budget_at_the_certificate_share():
    for population, allowed, draws in [(1000, 100, 126), (2000, 200, 179), (50000, 5000, 894), (300, 15, 69)]:
        size = sample_size(population, allowed, draws, 0.05)
        assert draws <= size <= draws + 45
        assert wrong_budget(population, allowed, size, CERTIFIED_SHARE * 0.05) == wrong_budget(population, allowed, draws, 0.05)
        if size > draws:  # and not one label more than that takes
            assert wrong_budget(population, allowed, size - 1, CERTIFIED_SHARE * 0.05) < wrong_budget(population, allowed, draws, 0.05)


def test_planning_prefers_a_sample_when_scores_separate():
    position = np.linspace(0, 1, 100)
    wrong = position > 0.8
    n_sample, cost, kept = plan_sample(position, wrong, 2000, 200, 0.05, 0.05, 1.0)
    assert 0 < n_sample < 2000 and 0.6 < kept <= 1.0 and cost < 2000 * 0.6
    assert expected_rank_fraction(np.array([0.9, 0.5]), np.array([1.0, 0.9, 0.5, 0.1])).tolist() == [0.375, 0.625]


def scored(n, rates, costs, separation, seed):
    agree, cost, models = synthetic_pool(n, rates, costs, seed=seed)
    score = synthetic_scores(agree, separation, seed=seed + 1)
    score[:, -1] = np.nan
    return agree, cost, models, score


def test_the_certification_sample_grows_above_target_0_9_as_the_allowed_wrong_answers_shrink():
    agree, cost, models, score = scored(2000, [0.97], [1.0, 20.0], 2.0, seed=4)
    labels = {}
    for target in (0.8, 0.9, 0.95):
        out = simulate("cascade", agree, cost, models, Guarantee(target, 0.95), seed=1, score=score)
        details = out.certificate.details
        assert details["fallback_reason"] is None
        labels[target] = details["certification_labels"]
    rule = round(4 * math.sqrt(2000))  # 179
    assert rule <= labels[0.8] <= rule + 10 and rule <= labels[0.9] <= rule + 10  # + sample_size's rounding up
    assert round(rule * math.sqrt(2)) <= labels[0.95] <= round(rule * math.sqrt(2)) + 10


def test_never_worse_on_a_tiny_batch_and_at_target_one():
    agree, cost, models, score = scored(60, [0.8, 0.85], [1, 8, 20], separation=1.0, seed=3)
    out = simulate("cascade", agree, cost, models, Guarantee(0.9), seed=0, score=score)
    assert out.hit(0.9)
    assert out.cost <= out.reference_cost * 1.02
    top = simulate("cascade", *scored(3000, [0.9], [1, 20], 2.0, 4)[:3], Guarantee(1.0), seed=0,
                   score=scored(3000, [0.9], [1, 20], 2.0, 4)[3])
    assert top.realised_agreement == 1.0 and top.cost <= top.reference_cost * 1.02
    assert "no cascade saving" in top.certificate.details["fallback_reason"]


@dataclass(frozen=True)
class PastData:
    """The documented fields of smartmix.calibration.Calibration."""

    models: tuple
    agree: np.ndarray
    cost: np.ndarray
    score: np.ndarray
    source: str


@pytest.mark.skipif(not (SHARED / "mmlu-qwen-oai" / "test.jsonl").exists(), reason="shared data not present")
def test_calibration_from_a_separate_file_chooses_the_plan_without_a_pilot():
    from smartmix.bench.data import load_dataset
    from smartmix.policies import BatchSpec
    from smartmix.policies.scorefirst import ScoreFirstCascade

    data = load_dataset(SHARED / "mmlu-qwen-oai" / "test.jsonl")
    rows = np.random.default_rng(0).permutation(data.n_items)
    past, now = rows[:700], rows[700:]  # disjoint items: the plan never looks at the batch it certifies
    calibration = PastData(data.models, data.agree[past], data.cost[past], data.score[past], "past.jsonl")
    options = (("calibration", calibration),)
    policy = ScoreFirstCascade(BatchSpec(2000, data.models, Guarantee(0.9), seed=1, options=options))
    assert policy.pilot_size == 0 and policy.head == 0 and policy.phase == "first_pass"
    assert policy.projection["calibration"] == "past.jsonl"
    hits, savings = 0, []
    for seed in range(30):
        rows_now = np.random.default_rng(seed).choice(now, 2000)  # the batch: the other items only
        agree, cost, score = data.agree[rows_now], data.cost[rows_now], data.score[rows_now]
        out = simulate("cascade", agree, cost, data.models, Guarantee(0.9), seed=seed, score=score, options=options)
        assert out.certificate.details["pilot_items"] == 0
        hits += out.hit(0.9)
        savings.append(out.savings)
    assert hits >= 27 and np.median(savings) > 1.8


def test_validity_smoke_at_the_edge():
    """Agreement exactly at T, barely informative scores: 200 trials, hit rate at the 1 - δ edge."""
    trials, hits = 200, 0
    for seed in range(trials):
        agree, cost, models, score = scored(1500, [0.9, 0.88], [1, 2, 20], separation=0.3, seed=seed)
        hits += simulate("cascade", agree, cost, models, Guarantee(0.9), seed=seed, score=score).hit(0.9)
    assert hits / trials >= 0.95 - 1.96 * np.sqrt(0.95 * 0.05 / trials)


def test_engine_runs_score_first_on_recorded_outputs_and_pays_each_call_once(shared_data):
    """The real engine on recorded outputs: the head answers every item once (its answers on the labelled
    items are reused, not bought again), the bill beats reference-only, the realised agreement meets T."""
    import smartmix
    from smartmix.backends.replay import RecordedOutputs
    from smartmix.tasks import ExactComparator

    path = shared_data / "mmlu-qwen-oai" / "test.jsonl"
    result = smartmix.run(path, reference="gpt-4o", target=0.9, method="cascade", seed=0)
    df = result.to_pandas()
    head = result.certificate.details["chain"][0]
    assert sum(n for (model, _), n in result.ledger.calls.items() if model == head) == len(df)
    recorded = RecordedOutputs.load(path)
    comparator = ExactComparator()
    agree = [comparator.agree(a, recorded.output(i, "gpt-4o").answer) for i, a in zip(df["id"], df["answer"], strict=True)]
    assert sum(agree) / len(agree) >= 0.9
    assert result.savings > 1.5
    assert df["cost"].sum() == pytest.approx(result.total_cost, rel=1e-9)
    assert result.certificate.details["fallback_reason"] is None


def test_a_large_tie_at_the_top_score_does_not_leave_the_plan_blind_there():
    # APIs report log-probability 0 for many answers: half the pilot shares the top score, and all of those
    # are right. The plan must see them across the tie's whole stretch, not only at its middle.
    score = np.r_[np.ones(30), np.linspace(0.9, 0.1, 30)]
    wrong = np.r_[np.zeros(30, dtype=bool), np.arange(30) >= 15]
    position = expected_rank_fraction(score)
    assert position[:30].min() < 0.02 and position[:30].max() > 0.48
    assert np.allclose(np.sort(position), (np.arange(60) + 0.5) / 60)
    _, cost, kept = plan_sample(position, wrong, 2000, 200, 0.05, 0.06, 1.0, sizes=[179], spread=0.0)
    assert kept >= 0.5 and cost < 0.6 * 2000


def _recorded_arrays(path: Path, models: tuple[str, ...]):
    import json

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    answers = np.array([[r["outputs"][m]["answer"] for m in models] for r in rows], dtype=object)
    cost = np.array([[r["outputs"][m]["cost_usd"] for m in models] for r in rows])
    logprob = [[r["outputs"][m].get("confidence") for m in models] for r in rows]
    score = np.exp(np.array([[np.nan if v is None else v for v in row] for row in logprob], dtype=float))
    return answers == answers[:, [-1]], cost, score


def test_cascade_profiled_takes_over_when_a_first_pass_would_not_pay(shared_data):
    # medmcqa-llama at T=0.95 with llama3.1-70b (0.3 of the reference's price) as the candidate: its pass over
    # every item is too large a bet for the saving the pilot projects; profiling it first is not (1.25x).
    models = ("llama3.1-70b", "llama3.1-405b")
    agree, cost, score = _recorded_arrays(shared_data / "medmcqa-llama" / "test.jsonl", models)
    idx = np.random.default_rng(1).integers(0, len(agree), 20_000)
    out = simulate("cascade", agree[idx], cost[idx], models, Guarantee(0.95, 0.95), seed=1, score=score[idx])
    details = out.certificate.details
    assert "took over" in details["fallback_reason"]
    assert details["chain"][-1] == "llama3.1-405b" and len(details["chain"]) >= 2
    assert details["pilot_items"] >= 200 and out.plan.profiled.sum() >= details["pilot_items"]
    assert out.savings > 1.15
    assert out.realised_agreement >= 0.95


def test_the_hand_over_keeps_the_guarantee_at_the_edge():
    """Pools built so that the score-first pass does not pay but a profiled chain does, agreement exactly at T
    for the chain's stage: the hand-over is a function of the pilot, and the delegate certifies after it."""
    n, target, trials = 10_000, 0.9, 60
    hits = handed = 0
    for seed in range(trials):
        # one candidate agreeing on exactly T of the items, at 0.6 of the reference's price: a pass over every
        # item before any certificate is too large a bet, profiling first is not
        agree, cost, models = synthetic_pool(n, [target], [0.6, 1.0], seed=seed)
        score = synthetic_scores(agree, separation=2.0, seed=seed)
        out = simulate("cascade", agree, cost, models, Guarantee(target, 0.95), seed=seed, score=score)
        hits += out.hit(target)
        handed += "took over" in (out.certificate.details.get("fallback_reason") or "")
    assert handed >= trials // 2
    assert hits / trials >= 0.95 - 1.96 * np.sqrt(0.95 * 0.05 / trials)


def test_engine_hands_over_on_a_large_batch_and_pays_each_call_once(shared_data, tmp_path):
    """The real engine on 20,000 recorded items (medmcqa-llama drawn with replacement, ids made unique):
    cascade-profiled takes over after the pilot, reuses the pilot's answers, and no (item, model) call is
    paid twice; the answers written meet T against the reference's recorded ones."""
    import smartmix

    path = _bootstrap_file(shared_data, "medmcqa-llama", 20_000, 1, tmp_path / "big.jsonl")
    result = smartmix.run(
        path, reference="llama3.1-405b", models=["llama3.1-70b", "llama3.1-405b"], target=0.95, method="cascade", seed=0
    )
    assert "took over" in result.certificate.details["fallback_reason"]
    calls = _calls_per_model(result)
    assert max(calls.values()) <= 20_000
    stage = result.certificate.details["chain"][0]
    assert calls[stage] == 20_000  # the chain's first stage answered every item exactly once
    assert result.savings > 1.15
    assert _agreement_with_recorded(result, path, "llama3.1-405b") >= 0.95


def test_the_head_is_the_cheapest_whose_first_pass_pays():
    # Past data: candidate 1 agrees almost always but costs half the reference, so its projected bill is the
    # lowest yet its pass over every item is a larger bet than the saving; candidate 0 is cheap and its scores
    # find the items it gets right. The plan must run candidate 0, not decline because candidate 1 would not pay.
    from smartmix.policies import BatchSpec
    from smartmix.policies.scorefirst import ScoreFirstCascade

    def pool(n, seed):
        agree, cost, models = synthetic_pool(n, [0.3, 0.99], [0.02, 0.5, 1.0], seed=seed)
        return agree, cost, models, synthetic_scores(agree, separation=3.0, seed=seed)

    agree, cost, models, score = pool(1000, 99)
    options = (("calibration", PastData(models, agree, cost, score, "past")),)
    policy = ScoreFirstCascade(BatchSpec(2000, models, Guarantee(0.9), seed=1, options=options))
    projected = policy.projection
    assert projected["head"] == models[0] and policy.phase == "first_pass"
    agree, cost, models, score = pool(2000, 1)
    out = simulate("cascade", agree, cost, models, Guarantee(0.9), seed=1, score=score, options=options)
    assert out.savings > 1.2 and out.hit(0.9)


def test_the_second_stage_order_puts_the_head_group_first_each_by_its_own_score():
    from smartmix.policies.second_stage import composite_key, composite_wrong

    head = np.array([0.9, 0.2, 0.7, 0.4, 0.95])
    second = np.array([0.1, 0.8, 0.3, 0.6, np.nan])
    key = composite_key(head, second, split=0.5)
    order = list(np.argsort(-key, kind="stable"))
    assert order == [4, 0, 2, 1, 3]  # head scores above 0.5 by head score, then the rest by the second's score
    wrong = composite_wrong(head, 0.5, np.array([1, 0, 0, 0, 0], bool), np.array([0, 1, 1, 0, 1], bool))
    assert wrong.tolist() == [True, True, False, False, False]  # each item judged by the model it would keep


def test_the_second_stage_keeps_the_guarantee_at_the_edge():
    """A cheap head far below T and a pricier second model whose confident answers carry the rest: the items
    the head is unsure of go to the second model, and the certified prefix runs into the second group, where
    the error budget binds. Hit rate over 60 pools within sampling error of 1 - delta."""
    n, target, trials = 20_000, 0.9, 60
    hits = used = 0
    for seed in range(trials):
        agree, cost, models = synthetic_pool(n, [0.6, 0.8], [1.0, 4.0, 20.0], seed=seed)
        score = synthetic_scores(agree, separation=1.5, seed=seed)
        out = simulate("cascade", agree, cost, models, Guarantee(target, 0.95), seed=seed, score=score)
        hits += out.hit(target)
        details = out.certificate.details
        if "second_stage" in details:
            used += 1
            assert details["chain"] == ["m0", "m1", "ref"]
            assert out.shares.get("m1", 0.0) > 0.1  # the second stage kept answers of its own
    assert used >= trials // 2
    assert hits / trials >= 0.95 - 1.96 * np.sqrt(0.95 * 0.05 / trials)


def test_engine_runs_a_second_stage_and_pays_each_call_once(shared_data, tmp_path):
    """The real engine on 20,000 recorded items (triviaqa-llama drawn with replacement, ids made unique):
    llama3.1-8b answers every item, llama3.1-70b only the ones 8b is unsure of (and the pilot), no
    (item, model) call is paid twice, and the answers written meet T against the reference's recorded ones."""
    import smartmix

    path = _bootstrap_file(shared_data, "triviaqa-llama", 20_000, 2, tmp_path / "big.jsonl")
    models = ["llama3.1-8b", "llama3.1-70b", "llama3.1-405b"]
    result = smartmix.run(path, reference="llama3.1-405b", models=models, target=0.8, method="cascade", seed=0)
    details = result.certificate.details
    assert details["chain"] == models
    calls = _calls_per_model(result)
    assert calls["llama3.1-8b"] == 20_000
    second_items = details["second_stage"]["items"]
    assert second_items < calls["llama3.1-70b"] <= second_items + details["pilot_items"]
    assert calls["llama3.1-405b"] < 20_000
    assert result.savings > 2.0
    from rich.console import Console

    from smartmix.report import render

    console = Console(record=True, width=200)
    render(result, console)
    assert f"Second stage: the {second_items:,} items llama3.1-8b scored at or below" in console.export_text()
    assert _agreement_with_recorded(result, path, "llama3.1-405b") >= 0.8


def test_a_second_stage_is_never_planned_beyond_the_fee_the_preview_counts():
    """best_second_stage skips every option whose second pass would cost more than it is allowed to (the
    preview's upper figure counts one pass of the priciest candidate)."""
    from smartmix.policies.second_stage import best_second_stage

    rng = np.random.default_rng(0)
    n_pilot, population = 400, 50_000
    head_wrong = rng.random(n_pilot) > 0.6
    head = np.where(head_wrong, rng.random(n_pilot) * 0.6, 0.4 + rng.random(n_pilot) * 0.6)
    second_wrong = rng.random(n_pilot) > 0.9
    second = np.where(second_wrong, rng.random(n_pilot) * 0.5, 0.5 + rng.random(n_pilot) * 0.5)
    args = (head, head_wrong, {1: (second, second_wrong)}, rng.random(population), 5_000, 0.05, {1: 4.0}, 20.0)
    free = best_second_stage(*args, max_second_fee=math.inf)
    assert free is not None and free.cost < 20.0 * population * 0.5  # an accurate second model pays
    capped = best_second_stage(*args, max_second_fee=0.3 * population * 4.0)
    assert capped is not None and capped.share * population * 4.0 <= 0.3 * population * 4.0
    assert best_second_stage(*args, max_second_fee=0.05 * population * 4.0) is None  # no split sends so few


def _run_with_asks(policy, agree, cost, score):
    """Run ``policy`` through the execution core on recorded arrays; returns its execution and each model's
    distinct items asked (the source pays an (item, model) pair once, as the engine's journal does)."""
    from smartmix.core.driver import execute, run_inline
    from smartmix.core.offline import OfflineSource

    source = OfflineSource(agree, cost, score)
    execution = run_inline(execute(policy, source))
    asked = [int(((source.called.astype(np.int64) >> m) & 1).sum()) for m in range(agree.shape[1])]
    return execution, np.array(asked)


def test_the_pilot_screens_out_a_pricier_candidate_that_cannot_win_and_keeps_a_useful_second():
    """A large batch's pilot asks every affordable candidate only on its first part: a pricier candidate that
    could neither head the cascade nor pay as its second stage is not asked again, while one that carries a
    second stage stays for the whole pilot and is used."""
    from smartmix.policies import BatchSpec
    from smartmix.policies.scorefirst import ScoreFirstCascade

    n = 20_000
    for seed in range(3):
        # m1 agrees barely more often than m0 at 16 times its price: it cannot win
        agree, cost, models = synthetic_pool(n, [0.9, 0.93], [1.0, 16.0, 20.0], seed=seed)
        score = synthetic_scores(agree, separation=2.0, seed=seed)
        score[:, -1] = np.nan
        policy = ScoreFirstCascade(BatchSpec(n, models, Guarantee(0.85), seed=seed))
        execution, asked = _run_with_asks(policy, agree, cost, score)
        assert policy.screen_size == ScoreFirstCascade.screen_min < policy.pilot_size
        assert policy.screened_out == (1,) and asked[1] == policy.screen_size
        details = execution.certificate.details
        assert details["pilot_screened_out"] == {"after_items": policy.screen_size, "models": ["m1"]}
        # m1 is far more accurate where m0 is unsure, at a fifth of the reference's price: a second stage
        agree, cost, models = synthetic_pool(n, [0.6, 0.8], [1.0, 4.0, 20.0], seed=seed)
        score = synthetic_scores(agree, separation=1.5, seed=seed)
        score[:, -1] = np.nan
        policy = ScoreFirstCascade(BatchSpec(n, models, Guarantee(0.9), seed=seed))
        _, asked = _run_with_asks(policy, agree, cost, score)
        assert policy.screened_out == () and policy.second == 1
        assert asked[1] >= policy.pilot_size + len(policy.second_items) - 1
