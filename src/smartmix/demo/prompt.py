"""The few-shot prompt for binary movie-review sentiment, for the completions endpoint.

Both demo models (SmolLM2-135M-Instruct and the *base* model Gemma 3 270M) answer this prompt with one
token, `` positive`` or `` negative``, when asked for ``max_tokens=1`` at temperature 0; the first token's
top-2 logprob margin is then a usable confidence signal. The chat endpoint works much worse with such small
models (and Gemma 270M base has no chat template).

The examples are written for this prompt and do not come from the Rotten Tomatoes data set the demo
evaluates on. The template has one field, ``{text}``; render it with :func:`build_prompt` (or
``PROMPT_TEMPLATE.format(text=...)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "EXAMPLES",
    "LABELS",
    "NEGATIVE",
    "POSITIVE",
    "PROMPT_TEMPLATE",
    "build_prompt",
    "label_margin",
    "parse_label",
]

POSITIVE = "positive"
NEGATIVE = "negative"
LABELS: tuple[str, str] = (POSITIVE, NEGATIVE)

EXAMPLES: tuple[tuple[str, str], ...] = (
    ("A warm, funny and beautifully acted film that I would gladly watch again.", POSITIVE),
    ("Dull, overlong and badly written; I kept checking my watch.", NEGATIVE),
    ("The plot makes no sense and the characters are impossible to care about.", NEGATIVE),
    ("The director keeps the tension high, and the ending is genuinely moving.", POSITIVE),
    ("A lazy sequel with no new ideas and jokes that fall flat.", NEGATIVE),
    ("Smart, stylish entertainment with a career-best performance from its lead.", POSITIVE),
)

_INSTRUCTION = "Classify the sentiment of each movie review as positive or negative."


def _render_examples(examples: Iterable[tuple[str, str]]) -> str:
    return "".join(f"Review: {text}\nSentiment: {label}\n\n" for text, label in examples)


PROMPT_TEMPLATE: str = f"{_INSTRUCTION}\n\n{_render_examples(EXAMPLES)}" + "Review: {text}\nSentiment:"


def build_prompt(text: str) -> str:
    """The prompt for one review (newlines in the review are folded into spaces)."""
    return PROMPT_TEMPLATE.format(text=" ".join(str(text).split()))


def parse_label(answer: str | None) -> str | None:
    """Map a model's (first-token) answer to ``"positive"``/``"negative"``, or None if it is neither.

    Accepts leading spaces, case differences and truncated words (" pos", " Negative.").
    """
    if not answer:
        return None
    word = answer.strip().strip(".,:;!\"'").lower()
    if len(word) < 3:
        return None
    for label in LABELS:
        if label.startswith(word) or word.startswith(label):
            return label
    return None


def label_margin(top_logprobs: Sequence[tuple[str, float]]) -> float | None:
    """The first token's top-2 logprob margin (top1 - top2, >= 0; larger = surer), None if unknown.

    With a single alternative the margin is infinite in principle; we return the top logprob's distance to
    the floor of -100 so that it stays a finite number.
    """
    if not top_logprobs:
        return None
    values = sorted((lp for _, lp in top_logprobs), reverse=True)
    if len(values) == 1:
        return values[0] + 100.0
    return values[0] - values[1]
