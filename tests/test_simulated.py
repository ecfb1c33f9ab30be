from __future__ import annotations

import asyncio

import numpy as np
import pytest

from smartmix.backends.base import Backend
from smartmix.backends.simulated import (
    PAPER_PROFILES,
    PAPER_REPORTED,
    SimulatedBackend,
    simulated_arrays,
    simulated_items,
)
from smartmix.domain import Message, Request
from smartmix.errors import ConfigError, UnknownModelError
from smartmix.tasks import ExactComparator


def test_profiles_hold_the_paper_numbers() -> None:
    assert set(PAPER_PROFILES) == {"imdb", "sms-spam", "ag-news"}
    assert set(PAPER_REPORTED) == {"imdb", "sms-spam", "ag-news", "max"}
    imdb = PAPER_PROFILES["imdb"]
    assert imdb.n_items == 50_000 and imdb.reference == "gpt-4"
    gpt4 = imdb.model("gpt-4")
    assert (gpt4.prompt_tokens, gpt4.completion_tokens) == pytest.approx((316, 1))
    assert (gpt4.input_price, gpt4.output_price) == pytest.approx((3e-5, 6e-5))
    assert imdb.model("davinci-002").completion_tokens == pytest.approx(15.99)
    assert PAPER_PROFILES["sms-spam"].n_items == 5_574
    assert PAPER_PROFILES["ag-news"].model("gpt-3.5-turbo-instruct").agreement == 0.94
    with pytest.raises(UnknownModelError, match="its models: gpt-4, gpt-3.5-turbo-1106"):
        imdb.model("gpt-5")


def test_profile_pool() -> None:
    pool = PAPER_PROFILES["imdb"].pool()
    assert pool.reference.name == "gpt-4"
    assert pool.names[0] == "babbage-002" and pool.names[-1] == "gpt-4"
    assert pool.spec("gpt-4").cost(316, 1) == pytest.approx(
        PAPER_PROFILES["imdb"].model("gpt-4").cost_per_item
    )


def test_items() -> None:
    items = simulated_items(PAPER_PROFILES["sms-spam"])
    assert len(items) == 5_574 and items[0].id == "sms-spam-0" and "text" in items[0].fields
    assert [i.id for i in simulated_items("imdb", n_items=2)] == ["imdb-0", "imdb-1"]
    with pytest.raises(ConfigError, match="choose one of imdb, sms-spam, ag-news"):
        simulated_items("mnist")
    with pytest.raises(ConfigError, match="at least 1"):
        simulated_items("imdb", n_items=0)


@pytest.mark.parametrize("name", sorted(PAPER_PROFILES))
def test_arrays_agreement_matches_profile(name: str) -> None:
    profile = PAPER_PROFILES[name]
    arr = simulated_arrays(profile, seed=1)
    n = profile.n_items
    assert arr.agree.shape == (n, len(profile.models)) and arr.n_items == n
    assert arr.item_ids[0] == f"{name}-0"
    for j, model in enumerate(profile.models):
        rate = arr.agree[:, j].mean()
        sd = np.sqrt(model.agreement * (1 - model.agreement) / n)
        assert abs(rate - model.agreement) <= 5 * sd + 1e-12, model.name
        assert np.all(arr.cost[:, j] == model.cost_per_item)
    assert arr.agree[:, arr.index("gpt-4")].all()
    assert np.isnan(arr.confidence).all() and np.isnan(arr.correct).all()


def test_arrays_reproducible_by_seed_and_prefix_stable() -> None:
    a = simulated_arrays("imdb", seed=7, n_items=2_000)
    b = simulated_arrays("imdb", seed=7, n_items=2_000)
    c = simulated_arrays("imdb", seed=8, n_items=2_000)
    assert np.array_equal(a.agree, b.agree)
    assert not np.array_equal(a.agree, c.agree)
    assert np.array_equal(simulated_arrays("imdb", seed=7, n_items=500).agree, a.agree[:500])


def test_reference_is_the_most_expensive_and_cheap_models_leave_room_for_the_papers_savings() -> None:
    for name, profile in PAPER_PROFILES.items():
        costs = {m.name: m.cost_per_item for m in profile.models}
        assert max(costs, key=costs.__getitem__) == "gpt-4"
        # With free, perfect profiling a cheap model agreeing >= 0.9 saves more than the paper's average,
        # which pays for profiling and includes targets up to 0.98.
        good = [m for m in profile.models if 0.9 <= m.agreement < 1]
        best = min(good, key=lambda m: m.cost_per_item)
        assert costs["gpt-4"] / best.cost_per_item > PAPER_REPORTED[name], name


def test_backend_answers_consistent_with_arrays() -> None:
    profile = PAPER_PROFILES["ag-news"]
    backend = SimulatedBackend(profile, seed=3, n_items=300)
    assert isinstance(backend, Backend)
    arr = simulated_arrays(profile, seed=3, n_items=300)
    cmp = ExactComparator()
    for i in range(300):
        ref = backend.answer(f"ag-news-{i}", "gpt-4")
        assert ref.startswith("label-") and int(ref.split("-")[1]) in range(4)
        for j, model in enumerate(arr.models):
            assert cmp.agree(backend.answer(f"ag-news-{i}", model), ref) == arr.agree[i, j]


def test_backend_complete() -> None:
    backend = SimulatedBackend("imdb", seed=0, n_items=10)
    msg = (Message("user", "Review: fine\nSentiment:"),)
    done = asyncio.run(backend.complete(Request("davinci-002", msg, item_id="imdb-3")))
    assert done.model == "davinci-002" and done.text.startswith("label-")
    assert (done.input_tokens, done.output_tokens, done.cost_usd) == (309, 16, None)
    again = asyncio.run(
        SimulatedBackend("imdb", seed=0, n_items=10).complete(Request("davinci-002", msg, item_id="imdb-3"))
    )
    assert again.text == done.text
    with pytest.raises(UnknownModelError, match="not in the simulated profile 'imdb'"):
        asyncio.run(backend.complete(Request("gpt-5", msg, item_id="imdb-3")))
    asyncio.run(backend.aclose())


def test_backend_items_outside_the_simulated_range_are_deterministic() -> None:
    backend = SimulatedBackend("sms-spam", seed=5, n_items=10)
    for key in ("sms-spam-10", "someone-else-1", "free text prompt"):
        answers = {m.name: backend.answer(key, m.name) for m in backend.profile.models}
        assert answers == {
            m.name: SimulatedBackend("sms-spam", seed=5, n_items=10).answer(key, m.name)
            for m in backend.profile.models
        }
        assert answers["babbage-002"] != answers["gpt-4"]  # agreement 0.0
    agree = [
        backend.answer(f"x-{i}", "gpt-3.5-turbo-1106") == backend.answer(f"x-{i}", "gpt-4")
        for i in range(2000)
    ]
    assert np.mean(agree) == pytest.approx(0.94, abs=0.03)
    by_prompt = asyncio.run(backend.complete(Request("gpt-4", (Message("user", "hello"),))))
    assert by_prompt.text == backend.answer("hello", "gpt-4")
