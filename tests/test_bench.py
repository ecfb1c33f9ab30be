"""Smoke tests of the benchmark suite: reports are written, columns are right, numbers are sane."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from smartmix.bench.command import bench, default_methods, known_methods, run_bench
from smartmix.bench.data import (
    adversarial_batch,
    adversarial_rates,
    bootstrap_batch,
    load_dataset,
    policy_seed,
    trial_seed,
)
from smartmix.bench.limits import (
    best_two_tier_cost,
    floor_cost,
    learned_mix_cost,
    learned_two_tier_cost,
    lp_mix_cost,
    two_tier_cost,
)
from smartmix.bench.peers import bargain_available
from smartmix.bench.summary import COLUMNS
from smartmix.bench.trials import Cell, run_method, run_trial
from smartmix.errors import ConfigError


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def _num(text: str) -> float:
    return float(text) if text else math.nan


@pytest.fixture(scope="module")
def small_dataset(shared_data) -> Path:
    path = shared_data / "medmcqa-llama" / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


def test_quick_datasets_report(small_dataset, tmp_path):
    """`bench --quick` on one small dataset, through the typer command, with both workers."""
    app = typer.Typer()
    app.command()(bench)
    methods = "exhaustive,mix,paper" + (",bargain" if bargain_available() else "")
    result = CliRunner().invoke(
        app,
        [
            "--quick", "--suite", "datasets", "--data", str(small_dataset), "--n", "3000", "--trials", "4",
            "--targets", "0.8,0.9", "--methods", methods, "--out", str(tmp_path), "--workers", "2",
        ],
    )
    assert result.exit_code == 0, result.output
    for suffix in ("csv", "md", "png"):
        assert (tmp_path / f"datasets.{suffix}").stat().st_size > 0
    assert (tmp_path / "datasets_misses.csv").exists()
    md = (tmp_path / "datasets.md").read_text()
    assert md.startswith("# Benchmark: recorded datasets")
    assert "smartmix bench --suite datasets --data" in md and "--quick" in md

    rows = _rows(tmp_path / "datasets.csv")
    by = {(r["target"], r["method"]): r for r in rows}
    expected = set(methods.split(",")) | {
        "limit:lp-mix", "limit:two-tier", "limit:floor", "limit:learned-mix", "limit:learned-two-tier"
    }
    assert {r["method"] for r in rows} == expected
    assert len(rows) == 2 * len(expected)
    for r in rows:
        assert r["dataset"] == "medmcqa-llama" and r["n"] == "3000"
        lo, med, hi = _num(r["savings_p10"]), _num(r["savings_median"]), _num(r["savings_p90"])
        assert 0 < lo <= med <= hi < 100
        if r["kind"] != "limit":
            assert int(r["trials"]) == 4
            assert 0 <= _num(r["hit_rate"]) <= 1 and _num(r["hit_wilson_lower"]) <= _num(r["hit_rate"])
            assert 0 <= _num(r["profiling_share"]) <= 1
            shares = dict(part.split("=") for part in r["shares"].split("; "))
            assert sum(float(v) for v in shares.values()) == pytest.approx(1.0, abs=0.01)
            assert _num(r["wall_ms_per_trial"]) > 0
    for t in ("0.8", "0.9"):
        floor = _num(by[(t, "limit:floor")]["savings_median"])
        assert floor >= _num(by[(t, "limit:lp-mix")]["savings_median"]) - 1e-9
        assert floor >= _num(by[(t, "limit:two-tier")]["savings_median"]) - 1e-9
        for m in ("exhaustive", "mix"):  # valid methods: never below the floor's cost, hit on these easy cases
            assert _num(by[(t, m)]["savings_median"]) <= floor
            assert _num(by[(t, m)]["hit_rate"]) >= 0.75


def test_adversarial_paper_and_overheads_reports(tmp_path):
    run_bench(
        n=[2000], targets=(0.9,), methods=["exhaustive", "mix", "paper"], trials=1, quick=True,
        suites=("adversarial", "paper", "overheads"), out=tmp_path, workers=1, progress=False,
    )
    for suite in ("adversarial", "paper", "overheads"):
        for suffix in ("csv", "md", "png"):
            assert (tmp_path / f"{suite}.{suffix}").stat().st_size > 0, (suite, suffix)
    adv = _rows(tmp_path / "adversarial.csv")
    assert {r["scenario"] for r in adv} == {"at T", "T-0.5pt"}
    assert {r["dataset"] for r in adv} == {"1 cand.", "4 cand."}  # quick: 1 and 4 candidates
    assert all(int(r["trials"]) == 1 for r in adv)
    paper = _rows(tmp_path / "paper.csv")
    assert {r["dataset"] for r in paper} == {"imdb", "sms-spam", "ag-news"}
    assert "paper reports (avg over T)" in (tmp_path / "paper.md").read_text()
    overheads = (tmp_path / "overheads.md").read_text()
    assert "µs / item" in overheads and "8 models" in overheads


def test_trials_are_reproducible_and_paired(small_dataset):
    data = load_dataset(small_dataset)
    cell = Cell("datasets", data.name, 2000, 0.9, 0.95, ("exhaustive", "mix"), 3, ("recorded", data.name), limits=True)
    a = run_trial(cell, 0, 1, 7, {data.name: data})
    b = run_trial(cell, 0, 1, 7, {data.name: data})
    c = run_trial(cell, 0, 2, 7, {data.name: data})
    assert a.seed == b.seed != c.seed
    assert a.seed == trial_seed(7, "datasets", data.name, 2000, 0.9, "", 1)
    for m in cell.methods:
        assert (a.methods[m].cost, a.methods[m].realised) == (b.methods[m].cost, b.methods[m].realised)
    assert a.limits == b.limits
    assert set(a.limits) == {"lp-mix", "two-tier", "floor", "learned-mix", "learned-two-tier"}
    batch = bootstrap_batch(data, 500, a.seed)
    assert np.array_equal(batch.agree, bootstrap_batch(data, 500, a.seed).agree)


def test_a_method_draws_its_randomness_apart_from_the_batch(small_dataset):
    """The batch's rows come from the trial seed; the method must not reuse that stream (its random order
    would follow the rows drawn, and hit rates would not be those of a fresh batch)."""
    from smartmix.core.offline import simulate
    from smartmix.policies import Guarantee

    data = load_dataset(small_dataset)
    cell = Cell("datasets", data.name, 1000, 0.8, 0.95, ("cascade",), 1, ("recorded", data.name))
    seeds = [cell.seed(0, t) for t in range(6)]
    ran, reused = [], []
    for seed in seeds:
        batch = bootstrap_batch(data, cell.n, seed)
        ran.append(run_method("cascade", batch, cell, seed).cost)
        args = (batch.agree, batch.cost, batch.models, Guarantee(0.8, 0.95))
        assert simulate("cascade", *args, seed=policy_seed(seed), score=batch.score).cost == ran[-1]
        reused.append(simulate("cascade", *args, seed=seed, score=batch.score).cost)
    assert ran != reused
    assert len({policy_seed(s) for s in seeds} | set(seeds)) == 2 * len(seeds)


def test_learned_limits_pay_for_learning_but_not_for_looks():
    rng = np.random.default_rng(5)
    n = 40_000
    cheap_agrees = rng.random(n) < 0.92
    agree = np.column_stack([cheap_agrees, np.ones(n, dtype=bool)])
    cost = np.column_stack([np.full(n, 1.0), np.full(n, 20.0)])
    # A confidence that ranks disagreements low, but not perfectly.
    score = np.column_stack([np.where(cheap_agrees, rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n)), np.full(n, np.nan)])
    for target in (0.8, 0.9, 0.95):
        free_mix, free_tier = lp_mix_cost(agree, cost, target), two_tier_cost(agree, cost, score[:, 0], target)
        learned_mix = learned_mix_cost(agree, cost, target, 0.05)
        learned_tier = learned_two_tier_cost(agree, cost, score, target, 0.05)
        reference_only = cost[:, 1].sum()
        # Learning costs something, and never more than answering everything with the reference.
        assert free_mix <= learned_mix <= reference_only
        assert free_tier <= learned_tier <= reference_only
    # At T = 0.8 the cheap model alone is enough after a modest sample: close to its own cost.
    assert learned_mix_cost(agree, cost, 0.8, 0.05) < 1.3 * cost[:, 0].sum()


def test_limits_on_a_hand_made_batch():
    # 4 items; the cheap model (cost 1) agrees on items 0, 1; the reference costs 10.
    agree = np.array([[True, True], [True, True], [False, True], [False, True]])
    cost = np.array([[1.0, 10.0]] * 4)
    score = np.array([[0.9, np.nan], [0.8, np.nan], [0.3, np.nan], [0.7, np.nan]])
    # T = 0.75: 3 agreeing needed; escalating the least confident item (0.3) is enough: 4 + 10.
    assert two_tier_cost(agree, cost, score[:, 0], 0.75) == pytest.approx(14.0)
    assert best_two_tier_cost(agree, cost, score, 0.75) == pytest.approx(14.0)
    # T = 1: both disagreeing items escalated (0.3 and 0.7), not the confident agreeing ones: 4 + 20.
    assert two_tier_cost(agree, cost, score[:, 0], 1.0) == pytest.approx(24.0)
    # Floor: items 0, 1 at 1 each; one disagreement allowed at cost 1; the last item needs the reference.
    assert floor_cost(agree, cost, 0.75) == pytest.approx(13.0)
    # LP mix: rate 0.5 cheap + x reference: 0.5(1-x) + x >= 0.75 -> x = 0.5; cost 4 * (0.5 + 5).
    assert lp_mix_cost(agree, cost, 0.75) == pytest.approx(22.0)
    assert floor_cost(agree, cost, 0.75) <= min(lp_mix_cost(agree, cost, 0.75), two_tier_cost(agree, cost, score[:, 0], 0.75))


def test_adversarial_pools_have_exact_counts():
    rates = adversarial_rates(0.895, 4)
    assert rates[0] == rates[1] == 0.895 and rates[3] == pytest.approx(0.89)
    batch = adversarial_batch(10_000, rates, seed=3)
    assert batch.agree[:, :-1].sum(axis=0).tolist() == [round(r * 10_000) for r in rates]
    assert batch.agree[:, -1].all() and batch.cost[0].tolist() == [1, 2, 4, 8, 20]
    assert np.all((batch.score[:, :-1] > 0) & (batch.score[:, :-1] < 1))


def test_method_selection():
    assert "reference" not in default_methods()
    assert {"exhaustive", "efficient", "mix", "paper"} <= set(default_methods())
    assert "bargain" in known_methods()
    with pytest.raises(ConfigError, match="unknown suite"):
        run_bench(suites=("nope",), out=Path("/nonexistent"))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Small batches, scores, several files, large pools, time limits


def test_small_suite_reports_p5_wilson_and_an_80_column_summary(small_dataset, tmp_path):
    lines: list[str] = []
    methods = ["mix", "cascade", "paper"] + (["bargain"] if bargain_available() else [])
    rows = run_bench(
        data=[small_dataset], n=[300], targets=(0.9,), methods=methods, trials=3, suites=("small",),
        out=tmp_path, workers=1, progress=False, echo=lines.append,
    )["small"]
    by = {r.method: r for r in rows}
    assert set(methods) <= set(by) and "limit:two-tier" in by
    for m in methods:
        r = by[m]
        assert r.n == 300 and r.trials == 3 and r.timed_out == 0
        assert 0 < r.savings_p5 <= r.savings_median and r.hit_wilson_lower <= r.hit_rate
        assert 0 <= r.profiling_share <= 1
    md = (tmp_path / "small.md").read_text()
    assert md.startswith("# Benchmark: small batches") and "## Never worse than the reference" in md
    assert "paper†" in md and "margin" not in md.split("## Every setting")[0].split("†")[0]
    assert lines and all(len(line) <= 80 for line in lines)
    row = next(line for line in lines if line.startswith("medmcqa-llama"))
    # the best guaranteed method is named in full, with its savings; no cell cut to a character
    assert any(m in row for m in ("mix", "cascade")) and "x" in row
    assert any("†" in line and "paper" in line for line in lines)


def test_scores_none_makes_the_two_tier_limit_undefined(small_dataset, tmp_path):
    lines: list[str] = []
    rows = run_bench(
        data=[small_dataset], n=[300], targets=(0.8,), methods=["mix", "cascade", "bargain"] if bargain_available()
        else ["mix", "cascade"], trials=2, suites=("small",), out=tmp_path, workers=1, progress=False,
        scores="none", echo=lines.append,
    )["small"]
    methods = {r.method for r in rows}
    assert "limit:two-tier" not in methods and "limit:learned-two-tier" not in methods
    assert "bargain" not in methods and {"mix", "cascade", "limit:lp-mix"} <= methods
    md = (tmp_path / "small.md").read_text()
    assert "0.00×" not in md and "n/a" in md and "--scores none" in md
    data_line = next(line for line in lines if line.startswith("medmcqa-llama"))
    assert data_line.split()[-2:][0] == "n/a"  # two-tier column, and BARGAIN's
    with pytest.raises(ConfigError, match="--scores"):
        run_bench(data=[small_dataset], suites=("small",), scores="logprobs", out=tmp_path, progress=False)


def test_consistency_scores_need_the_scores_function(small_dataset, tmp_path):
    import smartmix.scores

    if hasattr(smartmix.scores, "consistency_candidates"):
        data = load_dataset(small_dataset, scores="consistency")
        assert len(data.models) > 5 and any("|" in m for m in data.models) and data.models[-1] == "llama3.1-405b"
    else:
        with pytest.raises(ConfigError, match="consistency_candidates"):
            load_dataset(small_dataset, scores="consistency")


def test_data_takes_several_paths_after_one_flag_and_reference_is_honoured(shared_data, tmp_path):
    files = [shared_data / "medmcqa-llama" / "test.jsonl", shared_data / "triviaqa-llama"]
    if not all(p.exists() for p in files):
        pytest.skip("shared data not found")
    app = typer.Typer()
    app.command()(bench)
    result = CliRunner().invoke(
        app,
        ["--suite", "small", "--data", str(files[0]), str(files[1]), "--reference", "llama3.1-70b", "--n", "300",
         "--targets", "0.9", "--methods", "mix", "--trials", "1", "--workers", "1", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "small.csv")
    assert {r["dataset"] for r in rows} == {"medmcqa-llama", "triviaqa-llama"}
    md = (tmp_path / "small.md").read_text()
    assert "Reference: llama3.1-70b" in md and "llama3.1-405b" in md  # the priciest is now a candidate
    assert f"--data {files[0]} {files[1]}" in md
    # one option value with commas works too; a reference no file has is a clear error
    from smartmix.bench.command import _paths

    assert _paths(["a.jsonl,b.jsonl", "c"]) == [Path("a.jsonl"), Path("b.jsonl"), Path("c")]
    from smartmix.errors import UnknownModelError

    with pytest.raises(UnknownModelError, match="gpt-9"):
        run_bench(data=[files[0]], suites=("small",), reference="gpt-9", out=tmp_path, progress=False)


def test_a_method_past_the_time_limit_is_reported_timed_out_not_hung(tmp_path):
    from smartmix.bench.summary import summarise
    from smartmix.bench.terminal import summary_lines
    from smartmix.bench.trials import run_cells

    cell = Cell("pool", "12 models", 1000, 0.9, 0.95, ("mix", "cascade"), 3, ("pool", 12))
    seen: dict[str, int] = {}

    def progress(method: str, k: int) -> None:
        seen[method] = seen.get(method, 0) + k

    import time

    start = time.perf_counter()
    (records,) = run_cells([cell], {}, 0, workers=1, progress=progress, limit_s=0.002)
    assert time.perf_counter() - start < 30
    assert seen == {"mix": 3, "cascade": 3}  # progress per method, every trial accounted for
    assert all(r.methods["mix"].timed_out for r in records)
    rows = summarise(cell, records)
    mix = next(r for r in rows if r.method == "mix")
    assert mix.trials == 0 and mix.timed_out == 3 and math.isnan(mix.savings_median)
    assert any("timed out" in line for line in summary_lines("pool", rows, 1.0, "pool.md"))


def test_paper_pruned_search_finds_the_published_cheapest_mix(monkeypatch):
    """Above four candidates `paper` tries only mixes with at most two models below "not used": the
    same cost as the published 6^(M-1) enumeration (here 6^5 = 7,776 combinations)."""
    import smartmix.policies.paper as paper
    from smartmix.bench.data import pool_batch
    from smartmix.core.offline import simulate
    from smartmix.policies import Guarantee

    for seed in range(3):
        batch = pool_batch(2000, seed=seed, n_models=6)
        args = (batch.agree, batch.cost, batch.models, Guarantee(0.85))
        pruned = simulate("paper", *args, seed=seed)
        monkeypatch.setattr(paper, "FULL_SEARCH_CANDIDATES", 10)
        full = simulate("paper", *args, seed=seed)
        monkeypatch.setattr(paper, "FULL_SEARCH_CANDIDATES", 4)
        assert full.plan.certificate.details["search"]["combinations_tried"] > pruned.plan.certificate.details[
            "search"]["combinations_tried"]
        assert pruned.cost == pytest.approx(full.cost, rel=1e-9)
        details = pruned.plan.certificate.details
        assert details["search"]["pruned"] and "pruned" in details["warnings"][0]
        assert not full.plan.certificate.details["search"]["pruned"] and "warnings" not in full.plan.certificate.details


def test_router_suite_finds_train_and_test_splits(shared_data, tmp_path):
    from smartmix.bench.command import _suites
    from smartmix.bench.router_eval import router_sets
    from smartmix.errors import DataError

    folder = shared_data / "mmlu-llama"
    if not folder.exists():
        pytest.skip("shared data not found")
    assert router_sets([folder, shared_data / "medmcqa-llama" / "test.jsonl"]) == [
        ("mmlu-llama", shared_data), ("medmcqa-llama", shared_data)
    ]
    (tmp_path / "only-test").mkdir()
    (tmp_path / "only-test" / "test.jsonl").write_text("")
    with pytest.raises(DataError, match="train.jsonl"):
        router_sets([tmp_path / "only-test"])
    assert "router" not in _suites("all") and _suites("all,router")[-1] == "router"


def test_every_method_scales_to_twenty_models():
    from smartmix.bench.data import pool_batch
    from smartmix.core.offline import simulate
    from smartmix.policies import Guarantee

    batch = pool_batch(1000, seed=2, n_models=20)
    assert len(set(batch.models)) == 20 and batch.models[-1] == "claude-sonnet-4-0"
    assert batch.models[:11] != pool_batch(10, seed=2).models[:11]  # the extra eight sorted in by price
    mean = batch.cost.mean(axis=0)
    assert np.all(mean[:-1] < mean[-1])
    import time

    for method in [m for m in default_methods() if m != "bargain"]:
        start = time.process_time()
        out = simulate(method, batch.agree, batch.cost, batch.models, Guarantee(0.9), seed=2, score=batch.score)
        assert time.process_time() - start < 5, method
        assert 0 < out.cost
