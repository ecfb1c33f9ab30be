"""The cascade route's decision, with the batch chain rule (:func:`smartmix.core.chain.keeps`): keep a
stage's answer iff its score is strictly above the threshold; a missing or NaN score never keeps. A served
request is decided exactly as the same item would be in a batch run with the same thresholds.
"""

from __future__ import annotations

import math
from typing import Any

from smartmix.backends.openai_compat import chat_top_logprobs, completions_top_logprobs
from smartmix.core.chain import keeps
from smartmix.domain import Completion
from smartmix.scores import confidence_score

__all__ = ["keeps", "logprob_params", "score_of"]


def logprob_params(body: dict[str, Any], api: str) -> dict[str, Any]:
    """The client's body, not streamed, asking for the first token's top alternatives."""
    if api == "chat":
        return dict(body, stream=False, logprobs=True, top_logprobs=5)
    return dict(body, stream=False, logprobs=5)


def score_of(response: dict[str, Any], api: str) -> float:
    """The answer's confidence score (1 − p₂/p₁ of the first token), NaN when the provider gave no logprobs."""
    try:
        choice = response["choices"][0]
    except (KeyError, IndexError, TypeError):
        return math.nan
    if not isinstance(choice, dict):
        return math.nan
    top = chat_top_logprobs(choice, 5) if api == "chat" else completions_top_logprobs(choice, 5)
    return float(confidence_score(Completion(model="", text="", top_logprobs=top)))
