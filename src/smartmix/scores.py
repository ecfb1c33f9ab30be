"""Confidence scores in [0, 1] from what a provider returns: the signal cascades decide on."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from smartmix.domain import Completion
from smartmix.tasks import Comparator, normalize_answer


def margin_from_top_logprobs(top: tuple[tuple[str, float], ...]) -> float:
    """Log-odds margin between the two most likely *distinct* first tokens.

    Tokens that differ only in spacing, case or surrounding punctuation (" True", "true") are the same
    answer: their probabilities are pooled. With a single distinct candidate, the margin is taken against
    the probability mass the provider did not list.
    """
    pooled: dict[str, float] = {}
    for token, logprob in top:
        key = normalize_answer(token) or token
        pooled[key] = pooled.get(key, 0.0) + math.exp(logprob)
    probs = sorted(pooled.values(), reverse=True)
    if not probs:
        return math.nan
    first = min(probs[0], 1.0)
    second = probs[1] if len(probs) > 1 else max(0.0, 1.0 - sum(probs))
    if second <= 0.0:
        return math.inf
    return math.log(first) - math.log(second)


def score_from_logprob(confidence):
    """A score in [0, 1] from a log-probability confidence: exp(min(0, c)); NaN stays NaN.

    Scalars or arrays, one formula (numpy's exp, bit-identical either way) for the live path and for the
    arrays of offline runs, so a score sitting on a threshold falls on the same side in both.
    """
    if isinstance(confidence, np.ndarray):
        return np.exp(np.minimum(confidence, 0.0))
    return float(np.exp(min(0.0, confidence)))


def confidence_score(completion: Completion) -> float:
    """A score in [0, 1]: 1 − p₂/p₁ from first-token top logprobs, else exp(recorded confidence), else NaN."""
    if completion.top_logprobs:
        margin = margin_from_top_logprobs(completion.top_logprobs)
        if math.isnan(margin):
            return math.nan
        return 1.0 - math.exp(-margin) if margin > 0 else 0.0
    if completion.confidence is not None and not math.isnan(completion.confidence):
        return score_from_logprob(completion.confidence)
    return math.nan


# ---------------------------------------------------------------------------------------------------
# Scores without logprobs, on known outputs (recorded data, the bench, the simulator)


def consistency_candidates(
    answers: np.ndarray,
    agree: np.ndarray,
    cost: np.ndarray,
    score: np.ndarray,
    models: Sequence[str],
    comparator: Comparator,
    *,
    graded: bool = True,
    max_checkers: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Append virtual candidates whose score is the agreement of other cheap models with them.

    ``answers`` (n, m) holds each model's parsed answer (None where it gave none), ``agree``/``cost``/``score``
    are the usual (n, m) arrays and ``models`` their column names, candidates cheapest first, the reference
    last. For every ordered pair of candidates (A, B), "A|B" answers with A's answer (its ``agree`` column
    is A's), costs A + B, and scores 1.0 when B agrees with A, else 0.0. With ``graded``, "A|B+C..." is
    added too, checked by the ``max_checkers`` cheapest other candidates: its score is the share of them
    that agree with A. Candidates, real and virtual, come back ordered by mean cost (cheapest first), the reference
    last: the result is ``(agree, cost, score, models)`` in the same layout. An unparseable answer of A scores 0.
    """
    answers = np.asarray(answers, dtype=object)
    models = tuple(models)
    n, m = agree.shape
    if answers.shape != (n, m) or cost.shape != (n, m) or score.shape != (n, m) or len(models) != m:
        raise ValueError(f"answers, agree, cost, score must all be (items, models) = {(n, m)} for models {models}")
    k = m - 1  # candidates
    if k < 2:
        return agree, cost, score, models
    # agreement between every two candidates, once: pair[a][b] is (n,) bool
    parsed = [[comparator.parse(x) if x is not None else None for x in answers[:, j]] for j in range(k)]
    pair: dict[tuple[int, int], np.ndarray] = {}
    for a in range(k):
        for b in range(a + 1, k):
            same = np.fromiter(
                (x is not None and y is not None and comparator.agree(x, y) for x, y in zip(parsed[a], parsed[b], strict=True)),
                dtype=bool, count=n,
            )
            pair[(a, b)] = pair[(b, a)] = same
    columns: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    for a in range(k):
        others = [b for b in range(k) if b != a]
        for b in others:
            columns.append((f"{models[a]}|{models[b]}", agree[:, a], cost[:, a] + cost[:, b], pair[(a, b)].astype(float)))
        checkers = sorted(others, key=lambda j: float(cost[:, j].mean()))[:max_checkers]
        if graded and len(checkers) >= 2:
            votes = np.mean([pair[(a, b)] for b in checkers], axis=0)
            name = f"{models[a]}|{'+'.join(models[b] for b in checkers)}"
            columns.append((name, agree[:, a], cost[:, a] + cost[:, checkers].sum(axis=1), votes))
    ref = m - 1
    columns = [(models[j], agree[:, j], cost[:, j], score[:, j]) for j in range(ref)] + columns
    columns.sort(key=lambda col: float(col[2].mean()))  # stable: a real model stays before its virtual ones
    columns.append((models[ref], agree[:, ref], cost[:, ref], score[:, ref]))
    return (
        np.column_stack([c[1] for c in columns]),
        np.column_stack([c[2] for c in columns]),
        np.column_stack([c[3] for c in columns]),
        tuple(c[0] for c in columns),
    )
