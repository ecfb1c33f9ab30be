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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from smartmix.backends.openai_compat import NO_KEY, EndpointConfig, ModelState, OpenAIBackend, load_body
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

    async def _post(self, state: ModelState, api: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        config = state.config
        call_kwargs = dict(kwargs, num_retries=0, timeout=config.timeout_s)
        if config.base_url:
            call_kwargs["api_base"] = config.base_url
        if state.key != NO_KEY:
            call_kwargs["api_key"] = state.key
        if api == "chat":
            response = await self._litellm.acompletion(**call_kwargs)
        else:
            response = await self._litellm.atext_completion(**call_kwargs)
        dump = getattr(response, "model_dump", None) or getattr(response, "dict", None)
        if dump is None:
            return load_body(str(response).encode())
        body = dump()
        if not isinstance(body, dict):
            return load_body(b"")
        return body

    async def aclose(self) -> None:
        """litellm keeps its own shared HTTP clients; nothing of ours to close."""
