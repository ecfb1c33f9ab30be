"""Calibration from a separate file, and the never-worse rule on tiny batches."""

from pathlib import Path

import numpy as np
import pytest

from smartmix.bench.data import bootstrap_batch, load_dataset
from smartmix.calibration import load_calibration
from smartmix.core.offline import simulate, synthetic_pool
from smartmix.errors import DataError
from smartmix.policies import Guarantee

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mmlu-qwen-oai"
needs_data = pytest.mark.skipif(not (DATA / "train.jsonl").exists(), reason="shared recorded outputs not found")


@needs_data
def test_calibration_loads_past_outputs_in_pool_order():
    data = load_dataset(DATA / "test.jsonl")
    cal = load_calibration(DATA / "train.jsonl", data.models)
    assert cal.models == data.models
    assert cal.agree.shape == (285, len(data.models)) and cal.agree[:, -1].all()
    assert np.all((cal.score[~np.isnan(cal.score)] >= 0) & (cal.score[~np.isnan(cal.score)] <= 1))
    assert 0.5 < cal.agree[:, 0].mean() < 1.0


def test_missing_calibration_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_calibration(tmp_path / "nope.jsonl", ("a", "b"))


@needs_data
@pytest.mark.parametrize("method", ["efficient", "mix"])
def test_plan_shape_comes_from_the_calibration_file_not_the_batch(method):
    data = load_dataset(DATA / "test.jsonl")
    cal = load_calibration(DATA / "train.jsonl", data.models)
    shapes, hits, savings = set(), 0, []
    for seed in range(6):
        batch = bootstrap_batch(data, 2000, seed)
        out = simulate(method, batch.agree, batch.cost, batch.models, Guarantee(0.8, 0.95), seed=seed, calibration=cal)
        details = out.certificate.details["calibration"]
        shapes.add((tuple(details["models"]), details["sample"]))
        hits += out.hit(0.8)
        savings.append(out.savings)
        assert out.certificate.details["bound"].startswith("exact hypergeometric")
        assert out.certificate.profiled == details["sample"]
    assert len(shapes) == 1  # the same shape whatever the batch
    (models, sample), = shapes
    assert models and 20 <= sample < 2000
    assert hits >= 5 and np.median(savings) > 1.2


def test_target_one_answers_with_the_reference_without_profiling():
    agree, cost, models = synthetic_pool(300, [0.99], [1, 20])
    out = simulate("mix", agree, cost, models, Guarantee(1.0, 0.95))
    assert out.certificate.profiled == 0 and out.profiling_cost == 0
    assert out.cost == pytest.approx(out.reference_cost)
    assert "no room" in out.certificate.details["fallback_reason"]


@pytest.mark.parametrize("method", ["exhaustive", "efficient", "mix"])
def test_tiny_batch_never_costs_more_than_the_allowance(method):
    """A 60-item batch with candidates priced like the reference: profiling can't pay; the bill stays within
    2.5% of reference-only and the certificate says why."""
    worst = 0.0
    for seed in range(20):
        agree, cost, models = synthetic_pool(60, [0.85, 0.9], [18, 19, 20], seed=seed)
        out = simulate(method, agree, cost, models, Guarantee(0.9, 0.95), seed=seed)
        worst = max(worst, out.cost / out.reference_cost)
        assert out.hit(0.9)
        assert out.certificate.details.get("fallback_reason")
    assert worst <= 1.025 + 1e-9


def test_preview_break_even_grows_with_the_target_and_the_candidates_price():
    from smartmix.preview import break_even_items

    cheap = {"mini": 0.03, "mid": 0.18, "ref": 0.5}
    dear = {"mini": 0.3, "mid": 0.4, "ref": 0.5}
    low, high = break_even_items(cheap, "ref", "mix", 0.9), break_even_items(cheap, "ref", "mix", 0.95)
    assert low is not None and high is not None and 50 < low < high < 2000
    assert break_even_items(dear, "ref", "mix", 0.9) > low
    assert break_even_items(cheap, "ref", "mix", 1.0) is None


def test_preview_gives_the_cascades_break_even_from_its_own_pilot_decision():
    """The cascade's break-even is the policy's own go rule fed perfect pilot answers: small with a cheap head,
    none at target 1, and with a head above half the reference's price only where the hand-over can run."""
    import io

    from rich.console import Console

    from smartmix.policies.scorefirst import ScoreFirstCascade
    from smartmix.preview import Preview, cascade_break_even_items, render_preview

    cheap = {"mini": 0.03, "mid": 0.18, "ref": 0.5}
    dear = {"mini": 0.3, "mid": 0.4, "ref": 0.5}
    low = cascade_break_even_items(cheap, "ref", 0.9)
    assert low is not None and low < 100
    assert cascade_break_even_items(cheap, "ref", 1.0) is None
    separate = int((2 / ScoreFirstCascade.separate_pilot_share) ** 2)  # where the pilot stays out: 10,000
    assert cascade_break_even_items(dear, "ref", 0.9) >= separate
    out = io.StringIO()
    render_preview(Preview(500, cheap, "ref", "cascade", {"cascade": low}), Console(file=out, width=200))
    assert f"'cascade' answers with the reference after its pilot below ~{low:,} items" in out.getvalue()


def test_preview_states_the_never_worse_cap_not_every_model_on_every_item():
    """The cost preview's upper figure is the bill the never-worse rule allows (the test above holds the
    methods to it), not the sum of every model on every item."""
    import io

    from rich.console import Console

    from smartmix.preview import Preview, render_preview

    per_model = {"mini": 0.03, "mid": 0.18, "ref": 0.5}
    for method in ("exhaustive", "efficient", "mix", "cascade-profiled"):
        preview = Preview(1_000, per_model, "ref", method)
        assert preview.ceiling == pytest.approx(1.025 * 0.5)
        out = io.StringIO()
        render_preview(preview, Console(file=out, width=200))
        assert "~$0.5125" in out.getvalue() and "2.5% profiling allowance" in out.getvalue()
    cascade = Preview(1_000, per_model, "ref", "cascade")
    assert cascade.ceiling == pytest.approx(1.015 * 0.5 + 0.18)  # pilot + the dearest possible first pass
    assert Preview(1_000, per_model, "ref", "paper").ceiling == pytest.approx(0.71)  # no never-worse rule
