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
from smartmix.bench.trials import Cell, run_trial
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
