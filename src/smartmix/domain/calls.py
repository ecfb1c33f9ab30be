"""A call to a model: what is asked (:class:`Request` of :class:`Message` s) and what comes back (:class:`Completion`).

These are the domain's words for one model call; backends, the journal, the engine and the server all speak
them, and none of them owns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Request:
    """What to ask one model about one item.

    ``item_id`` lets offline backends (replay, simulated) find the recorded answer; real providers ignore it.
    ``params`` holds generation settings (max_tokens, temperature, logprobs, top_logprobs, endpoint).
    """

    model: str
    messages: tuple[Message, ...]
    item_id: str | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.content for m in self.messages)


@dataclass
class Completion:
    """What one model said, what it used and what it cost.

    ``cost_usd`` is set when the backend knows the real charge (recorded outputs); otherwise the engine
    prices the usage with the pool's prices. ``top_logprobs`` holds the first output token's most likely
    alternatives as (token, logprob) pairs, most likely first, when the provider gives them.
    ``confidence`` is a ready-made confidence signal (a log-probability, higher is surer) when one is known.
    """

    model: str
    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    top_logprobs: tuple[tuple[str, float], ...] | None = None
    confidence: float | None = None
    latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


__all__ = ["Completion", "Message", "Request"]
