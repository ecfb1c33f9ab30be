"""Providers that do not speak the OpenAI API (Anthropic, Gemini, Bedrock, ...), through litellm.

Optional: ``pip install 'smartmix[litellm]'``. litellm is heavy, so it is imported only when a
:class:`LiteLLMBackend` is built, with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` so that importing it does
not fetch a price list from the network.

It behaves exactly like :class:`~smartmix.backends.openai_compat.OpenAIBackend` — same
:class:`~smartmix.backends.openai_compat.EndpointConfig`, same concurrency bounds, rate limits, retries
(litellm's own are off: ``num_retries=0``), logprobs handling and error messages — and differs in the
call only:

- ``provider_model`` is litellm's model string, e.g. ``"anthropic/claude-3-5-haiku-latest"``;
- ``base_url`` becomes litellm's ``api_base``;
- ``api_key_env=None`` lets litellm find the provider's usual variable itself (``ANTHROPIC_API_KEY``,
  ...); otherwise the key is read from the named variable and passed explicitly.

The answer is checked exactly as the OpenAI-compatible backend checks its own (``content: null``, empty or
non-text content is garbage, retried, then a failed item), and :meth:`forward` / :meth:`open_stream` serve
``smartmix serve``: a client's body goes to litellm as keyword arguments, its answer comes back in the
OpenAI format (streams as server-sent events).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from smartmix.backends.http import dumps
from smartmix.backends.openai_compat import NO_KEY, EndpointConfig, ModelState, OpenAIBackend
from smartmix.backends.retry import Backoff
from smartmix.errors import MissingExtraError

__all__ = ["LiteLLMBackend"]


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        raise MissingExtraError("the litellm backend", "litellm", "litellm") from None
    return litellm


class LiteLLMBackend(OpenAIBackend):
    """A :class:`~smartmix.backends.base.Backend` over litellm; see the module docstring."""

    def __init__(self, endpoints: Mapping[str, EndpointConfig], *, backoff: Backoff = Backoff()):
        self._litellm = _import_litellm()
        super().__init__(endpoints, backoff=backoff)

    def __repr__(self) -> str:  # never the keys
        return f"LiteLLMBackend(models={sorted(self._states)})"

    def endpoint(self, model: str) -> str:
        """Who answers ``model``: the LiteLLM model string and api_base (part of the journal's key)."""
        config = self._state(model).config
        return f"litellm {config.api} {config.sent_model} {config.base_url or ''}".rstrip()

    def _call_kwargs(self, state: ModelState, payload: dict[str, Any]) -> dict[str, Any]:
        config = state.config
        call_kwargs = dict(payload, num_retries=0, timeout=config.timeout_s)
        if config.base_url:
            call_kwargs["api_base"] = config.base_url
        if state.key != NO_KEY:
            call_kwargs["api_key"] = state.key
        return call_kwargs

    async def _exchange(self, state: ModelState, api: str, payload: dict[str, Any]) -> bytes | dict[str, Any]:
        call_kwargs = self._call_kwargs(state, payload)
        call = self._litellm.acompletion if api == "chat" else self._litellm.atext_completion
        async with asyncio.timeout(state.config.timeout_s):
            response = await call(**call_kwargs)
        dump = getattr(response, "model_dump", None) or getattr(response, "dict", None)
        if dump is None:
            return str(response).encode()
        body = dump()
        return body if isinstance(body, dict) else b""

    async def _open_stream(self, state: ModelState, api: str, payload: dict[str, Any]) -> _LiteLLMStream:
        call_kwargs = self._call_kwargs(state, dict(payload, stream=True))
        if api == "chat":
            response = await self._litellm.acompletion(**call_kwargs)
        else:
            response = await self._litellm.atext_completion(**call_kwargs)
        return _LiteLLMStream(response)

    async def aclose(self) -> None:
        """litellm keeps its own shared HTTP clients; nothing of ours to close."""


class _LiteLLMStream:
    """litellm's stream of chunks as the server-sent events an OpenAI endpoint sends."""

    status = 200
    headers: dict[str, str] = {}

    def __init__(self, response: Any):
        self._response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response:
            dump = getattr(chunk, "model_dump", None)
            yield b"data: " + dumps(dump(exclude_none=True) if dump else chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        closer = getattr(self._response, "aclose", None)
        if closer is not None:
            try:
                asyncio.get_running_loop().create_task(closer())
            except RuntimeError:
                pass
