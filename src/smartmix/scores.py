"""Confidence scores in [0, 1] from what a provider returns: the signal cascades decide on."""

from __future__ import annotations

import math

import numpy as np

from smartmix.domain import Completion
from smartmix.tasks import normalize_answer


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
