"""OpenAI-compatible providers: api.openai.com, vLLM, llama.cpp, Ollama, Together, OpenRouter, ...

One :class:`OpenAIBackend` serves a pool: each model name maps to an :class:`EndpointConfig` (where it
lives, which env var holds its key, which API to speak, how hard it may be pushed).

How a request becomes an HTTP call:

- ``api="chat"``: ``/chat/completions`` with the request's messages as they are.
- ``api="completions"``: ``/completions`` with one prompt: the system messages first, then the others
  in order, their contents joined by a blank line (``"\\n\\n"``). Roles are dropped.
- ``temperature`` is 0 unless the request's params say otherwise; ``max_tokens``, ``stop``, ``seed`` and
  ``top_p`` are passed on when given. ``request.param("endpoint")`` may be ``"chat"`` or
  ``"completions"`` to override the configured API for one request.
- ``request.param("logprobs")`` true asks for the first token's top alternatives
  (``logprobs=True, top_logprobs=k`` on chat, ``logprobs=k`` on completions,
  ``k = request.param("top_logprobs", 5)``). A provider that rejects that (HTTP 400 mentioning
  logprobs) is asked again at once without it, and never asked for logprobs again by this backend.
  One that silently omits them gives ``top_logprobs=None``.

The openai SDK does the HTTP (auth, URLs, errors); its own retries are off (``max_retries=0``) so that
attempts are counted once, by :func:`smartmix.backends.retry.call_with_retries`, which owns backoff,
``Retry-After`` and the attempt budget. The response body is parsed here from the raw JSON rather than
through the SDK's models so that garbage (non-JSON, no ``choices``) is detected and retried, and
providers that stray from the schema still work.

API keys are read from the environment when the backend is built, are handed only to the SDK client,
and are scrubbed from every message this module produces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smartmix.backends.retry import (
    RETRYABLE_STATUS,
    Backoff,
    ModelGate,
    TransientError,
    call_with_retries,
    parse_retry_after,
    redact,
)
from smartmix.domain import Completion, Request
from smartmix.errors import ConfigError, ProviderError, UnknownModelError

__all__ = [
    "EndpointConfig", "ModelState", "OpenAIBackend", "chat_top_logprobs", "completions_top_logprobs", "load_body",
    "parse_chat_response", "parse_completions_response",
]

log = logging.getLogger("smartmix.backends")

NO_KEY = "no-key"
_APIS = ("chat", "completions")
_PASSTHROUGH_PARAMS = ("stop", "seed", "top_p")


@dataclass(frozen=True)
class EndpointConfig:
    """Where one model lives and how hard it may be pushed. Holds the *name* of the key's env var, never
    the key itself, so configs can be logged and journaled safely."""

    model: str  # the name smartmix uses
    provider_model: str | None = None  # the name sent to the provider (default: model)
    base_url: str | None = None  # None = api.openai.com
    api_key_env: str | None = None  # env var holding the key; None -> "no-key" (local servers)
    api: str = "chat"  # "chat" or "completions"
    max_concurrency: int = 16
    requests_per_minute: float | None = None
    timeout_s: float = 60.0
    max_attempts: int = 6

    @property
    def sent_model(self) -> str:
        return self.provider_model or self.model

    @property
    def where(self) -> str:
        return self.base_url or "https://api.openai.com/v1"

    def validate(self) -> None:
        if self.api not in _APIS:
            raise ConfigError(f"model '{self.model}': api must be 'chat' or 'completions', not {self.api!r}")
        if self.max_concurrency < 1:
            raise ConfigError(f"model '{self.model}': max_concurrency must be at least 1")
        if self.max_attempts < 1:
            raise ConfigError(f"model '{self.model}': max_attempts must be at least 1")
        if self.timeout_s <= 0:
            raise ConfigError(f"model '{self.model}': timeout_s must be positive")
        if self.requests_per_minute is not None and self.requests_per_minute <= 0:
            raise ConfigError(f"model '{self.model}': requests_per_minute must be positive or None")


def read_api_key(config: EndpointConfig) -> str:
    """The key from ``config.api_key_env``; ``"no-key"`` when none is configured (local servers)."""
    if config.api_key_env is None:
        return NO_KEY
    key = os.environ.get(config.api_key_env, "").strip()
    if not key:
        raise ConfigError(
            f"model '{config.model}' needs an API key in the environment variable {config.api_key_env}, "
            f"which is not set. Set it (export {config.api_key_env}=...) or, for a local server that needs "
            "no key, leave api_key_env empty."
        )
    return key


def completions_prompt(request: Request) -> str:
    """The single prompt sent to ``/completions``: system messages first, then the rest, blank-line joined."""
    system = [m.content for m in request.messages if m.role == "system"]
    rest = [m.content for m in request.messages if m.role != "system"]
    return "\n\n".join(system + rest)


# ----------------------------------------------------------------------------------------------- parsing


class MalformedResponse(TransientError):
    """The provider answered 2xx with something that is not a usable completion."""


def load_body(content: bytes) -> dict[str, Any]:
    """A response body as a JSON object, or :class:`MalformedResponse` (retried like any garbage)."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        snippet = content[:80].decode("utf-8", "replace")
        raise MalformedResponse(f"malformed response: body is not JSON ({snippet!r})") from None
    if not isinstance(body, dict):
        raise MalformedResponse("malformed response: body is not a JSON object")
    return body


def _first_choice(body: dict[str, Any]) -> dict[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        err = body.get("error")
        detail = f" (error: {str(err)[:200]})" if err else ""
        raise MalformedResponse(f"malformed response: no choices{detail}")
    return choices[0]


def _usage(body: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None, None

    def as_int(v: Any) -> int | None:
        return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    return as_int(usage.get("prompt_tokens")), as_int(usage.get("completion_tokens"))


def _ranked(pairs: list[tuple[str, float]], k: int) -> tuple[tuple[str, float], ...] | None:
    clean = [(str(t), float(lp)) for t, lp in pairs if isinstance(lp, int | float) and not isinstance(lp, bool)]
    if not clean:
        return None
    clean.sort(key=lambda p: p[1], reverse=True)
    return tuple(clean[:k])


def chat_top_logprobs(choice: dict[str, Any], k: int) -> tuple[tuple[str, float], ...] | None:
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    first = content[0]
    tops = first.get("top_logprobs")
    pairs: list[tuple[str, float]] = []
    if isinstance(tops, list):
        pairs = [(t.get("token"), t.get("logprob")) for t in tops if isinstance(t, dict)]
    if not pairs and "token" in first:
        pairs = [(first.get("token"), first.get("logprob"))]
    return _ranked(pairs, k)


def completions_top_logprobs(choice: dict[str, Any], k: int) -> tuple[tuple[str, float], ...] | None:
    lp = choice.get("logprobs")
    tops = lp.get("top_logprobs") if isinstance(lp, dict) else None
    if not isinstance(tops, list) or not tops or not isinstance(tops[0], dict):
        # llama.cpp's server answers /completions with the chat layout (logprobs.content[0].top_logprobs).
        return chat_top_logprobs(choice, k)
    return _ranked(list(tops[0].items()), k)


def parse_chat_response(body: dict[str, Any], *, model: str, k: int = 5) -> Completion:
    """A chat-completions JSON body as a :class:`Completion`; raises ``MalformedResponse`` on garbage."""
    choice = _first_choice(body)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedResponse("malformed response: choices[0] has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise MalformedResponse("malformed response: message content is not text")
    inp, out = _usage(body)
    extra: dict[str, Any] = {"finish_reason": choice.get("finish_reason")}
    if content is None and message.get("refusal"):
        extra["refusal"] = str(message["refusal"])
    return Completion(
        model=model, text=content or "", input_tokens=inp, output_tokens=out,
        top_logprobs=chat_top_logprobs(choice, k), extra=extra,
    )


def parse_completions_response(body: dict[str, Any], *, model: str, k: int = 5) -> Completion:
    """A (legacy) completions JSON body as a :class:`Completion`; raises ``MalformedResponse`` on garbage."""
    choice = _first_choice(body)
    text = choice.get("text")
    if not isinstance(text, str):
        raise MalformedResponse("malformed response: choices[0] has no text")
    inp, out = _usage(body)
    return Completion(
        model=model, text=text, input_tokens=inp, output_tokens=out,
        top_logprobs=completions_top_logprobs(choice, k), extra={"finish_reason": choice.get("finish_reason")},
    )


# ------------------------------------------------------------------------------------- error classifying


class _ParamRejected(Exception):
    """HTTP 400 about a parameter we can do without (logprobs) or rename (max_tokens)."""

    def __init__(self, param: str):
        super().__init__(param)
        self.param = param


def _error_text(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = str(body["error"].get("message") or message)
    elif isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    return " ".join(str(message).split())[:300]


def _is_transport_error(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, TimeoutError | ConnectionError) or module in {"httpx", "httpx2", "httpcore", "h11", "anyio"}


def classify_error(
    exc: BaseException, config: EndpointConfig, secrets: tuple[str, ...], *, sent_logprobs: bool, sent_max_tokens: bool
) -> BaseException:
    """Map a provider/SDK exception to what to do: TransientError (retry), _ParamRejected or ProviderError."""
    import openai

    status = getattr(exc, "status_code", None)
    if isinstance(exc, openai.APIStatusError) or isinstance(status, int):
        status = int(status) if status is not None else getattr(exc.response, "status_code", None)
        text = redact(_error_text(exc), secrets)
        response = getattr(exc, "response", None)
        # litellm keeps the provider's headers apart; the openai SDK on the response
        headers = getattr(exc, "litellm_response_headers", None) or getattr(response, "headers", None)
        if status == 429 and getattr(exc, "code", None) == "insufficient_quota":
            err = ProviderError(
                f"model '{config.model}' at {config.where}: the account is out of credit or over its quota "
                f"(HTTP 429: {text}). Not retried. What to do: check billing for the key in "
                f"{config.api_key_env or '(no key configured)'}, then rerun: paid calls are kept in the journal."
            )
            err.model, err.status, err.attempts = config.model, status, 1  # type: ignore[attr-defined]
            return err
        if status in RETRYABLE_STATUS:
            return TransientError(text or "provider error", status=status, retry_after=parse_retry_after(headers))
        lowered = text.lower()
        if status == 400 and sent_logprobs and "logprob" in lowered:
            return _ParamRejected("logprobs")
        if status == 400 and sent_max_tokens and "max_tokens" in lowered and "max_completion_tokens" in lowered:
            return _ParamRejected("max_tokens")
        return _permanent_error(status, text, config)
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return TransientError(f"no answer within the timeout of {config.timeout_s:g}s")
    if isinstance(exc, openai.APIConnectionError) or _is_transport_error(exc):
        cause = exc.__cause__ or exc.__context__
        why = f" ({type(cause).__name__}: {redact(str(cause), secrets)[:200]})" if cause else ""
        return TransientError(f"connection failed: {redact(str(exc), secrets)[:200]}{why}")
    return exc


def _permanent_error(status: int | None, text: str, config: EndpointConfig) -> ProviderError:
    name = f"model '{config.model}' at {config.where}"
    if status == 401:
        key_hint = (
            f"check the API key in the environment variable {config.api_key_env}"
            if config.api_key_env
            else "this endpoint needs a key: set api_key_env to the environment variable that holds it"
        )
        msg = f"{name}: the provider refused the API key (HTTP 401: {text}). What to do: {key_hint}."
    elif status == 403:
        msg = (
            f"{name}: access denied (HTTP 403: {text}). What to do: check that the key in "
            f"{config.api_key_env or '(no key configured)'} may use '{config.sent_model}'."
        )
    elif status == 404:
        msg = (
            f"{name}: not found (HTTP 404: {text}). What to do: check provider_model "
            f"('{config.sent_model}'), base_url (it usually ends in /v1) and api ('{config.api}')."
        )
    else:
        msg = (
            f"{name}: the provider rejected the request (HTTP {status}: {text}). Not retried: the same "
            "request would fail again. What to do: check the model's parameters (max_tokens, logprobs) "
            "and the prompt length."
        )
    err = ProviderError(msg)
    err.model, err.status, err.attempts = config.model, status, 1  # type: ignore[attr-defined]
    return err


# ------------------------------------------------------------------------------------------------ backend


class ModelState:
    """One model's endpoint settings, API key and gate (concurrency and rate limit), shared by its calls."""

    def __init__(self, config: EndpointConfig, key: str):
        self.config = config
        self.key = key
        self.gate = ModelGate(config.max_concurrency, config.requests_per_minute)
        self.logprobs_ok = True
        self.max_tokens_name = "max_tokens"


class OpenAIBackend:
    """A :class:`~smartmix.backends.base.Backend` for any OpenAI-compatible endpoint.

    ``endpoints`` maps smartmix model names to :class:`EndpointConfig`. Keys are read from the
    environment now (a missing variable is a :class:`~smartmix.errors.ConfigError` before anything is
    spent); SDK clients are created on first use, on the running event loop. Use one backend per event
    loop and ``await backend.aclose()`` (or ``async with``) at the end.

    ``Completion.extra["attempts"]`` counts the HTTP requests sent for that completion (a once-per-model
    logprobs fallback included); ``latency_ms`` is the successful request's round trip and
    ``extra["elapsed_ms"]`` the whole call, queueing and backoff included.
    """

    def __init__(self, endpoints: Mapping[str, EndpointConfig], *, backoff: Backoff = Backoff()):
        self.backoff = backoff
        self._states: dict[str, ModelState] = {}
        for name, config in endpoints.items():
            config.validate()
            self._states[name] = ModelState(config, read_api_key(config))
        self._clients: dict[tuple[str | None, str, float], Any] = {}

    def __repr__(self) -> str:  # never the keys
        return f"OpenAIBackend(models={sorted(self._states)})"

    @property
    def _secrets(self) -> tuple[str, ...]:
        return tuple(s.key for s in self._states.values() if s.key != NO_KEY)

    def _state(self, model: str) -> ModelState:
        try:
            return self._states[model]
        except KeyError:
            raise UnknownModelError(
                f"model '{model}' has no endpoint configured in this backend (configured: "
                f"{', '.join(sorted(self._states)) or 'none'}); add it to the pool's endpoints."
            ) from None

    def _client(self, state: ModelState) -> Any:
        config = state.config
        cache_key = (config.base_url, state.key, config.timeout_s)
        client = self._clients.get(cache_key)
        if client is None:
            import openai

            client = openai.AsyncOpenAI(
                api_key=state.key, base_url=config.base_url, timeout=config.timeout_s, max_retries=0
            )
            self._clients[cache_key] = client
        return client

    async def complete(self, request: Request) -> Completion:
        state = self._state(request.model)
        config = state.config
        started = time.perf_counter()
        sent = 0

        async def attempt(_n: int) -> Completion:
            nonlocal sent
            async with state.gate.slot():
                while True:
                    sent += 1
                    try:
                        return await self._send(state, request)
                    except _ParamRejected as rejected:  # once per model, straight away
                        if rejected.param == "logprobs":
                            state.logprobs_ok = False
                            log.warning("model %s rejects logprobs; asking without them from now on", config.model)
                        else:
                            state.max_tokens_name = "max_completion_tokens"
                            log.warning("model %s wants max_completion_tokens; using it from now on", config.model)
                        await state.gate.limiter.acquire()

        completion, _ = await call_with_retries(
            attempt, model=config.model, max_attempts=config.max_attempts, backoff=self.backoff, where=config.where
        )
        completion.extra["attempts"] = sent
        completion.extra["elapsed_ms"] = (time.perf_counter() - started) * 1000.0
        if request.param("logprobs") and not state.logprobs_ok:
            completion.extra["logprobs_unsupported"] = True
        return completion

    def _build_kwargs(self, state: ModelState, request: Request, api: str) -> tuple[dict[str, Any], int]:
        config = state.config
        k = int(request.param("top_logprobs", 5) or 5)
        kwargs: dict[str, Any] = {"model": config.sent_model, "temperature": request.param("temperature", 0)}
        if request.param("max_tokens") is not None:
            kwargs[state.max_tokens_name if api == "chat" else "max_tokens"] = request.param("max_tokens")
        for name in _PASSTHROUGH_PARAMS:
            if request.param(name) is not None:
                kwargs[name] = request.param(name)
        want_logprobs = bool(request.param("logprobs")) and state.logprobs_ok
        if api == "chat":
            kwargs["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            if want_logprobs:
                kwargs["logprobs"], kwargs["top_logprobs"] = True, k
        else:
            kwargs["prompt"] = completions_prompt(request)
            if want_logprobs:
                kwargs["logprobs"] = k
        return kwargs, k

    # -- what provider batch jobs need: the same bodies and the same parsing as a synchronous call -------------
    def endpoint_config(self, model: str) -> EndpointConfig:
        return self._state(model).config

    def batch_api(self, model: str) -> Any:
        """The provider's Files + Batches service for ``model`` (same base_url and key as its calls)."""
        from smartmix.batch.openai_api import OpenAIBatchAPI

        state = self._state(model)
        path = "/v1/chat/completions" if state.config.api == "chat" else "/v1/completions"
        return OpenAIBatchAPI(base_url=state.config.base_url, api_key=state.key, endpoint=path,
                              timeout_s=max(120.0, state.config.timeout_s))

    def request_body(self, request: Request) -> dict[str, Any]:
        """The JSON body a synchronous call would send for ``request``."""
        state = self._state(request.model)
        return self._build_kwargs(state, request, request.param("endpoint") or state.config.api)[0]

    def parse_body(self, body: dict[str, Any], request: Request) -> Completion:
        """A response body (from a batch output line) as a :class:`Completion`, exactly as a synchronous call."""
        state = self._state(request.model)
        api = request.param("endpoint") or state.config.api
        k = int(request.param("top_logprobs", 5) or 5)
        parse = parse_chat_response if api == "chat" else parse_completions_response
        return parse(body, model=request.model, k=k)

    async def _send(self, state: ModelState, request: Request) -> Completion:
        """One HTTP request: build it, send it under the timeout, classify failures, parse the answer."""
        config = state.config
        api = request.param("endpoint") or config.api
        if api not in _APIS:
            raise ConfigError(f"request for '{config.model}': endpoint must be 'chat' or 'completions', not {api!r}")
        kwargs, k = self._build_kwargs(state, request, api)
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(config.timeout_s):
                body = await self._post(state, api, kwargs)
        except TransientError:
            raise
        except Exception as exc:  # classified below; re-raised unchanged if not a provider failure
            mapped = classify_error(
                exc, config, self._secrets,
                sent_logprobs="logprobs" in kwargs, sent_max_tokens="max_tokens" in kwargs,
            )
            if isinstance(mapped, TransientError) and mapped.status == 429 and mapped.retry_after:
                state.gate.limiter.defer(min(mapped.retry_after, self.backoff.max_retry_after_s))
            if mapped is exc:
                raise
            raise mapped from None
        latency_ms = (time.perf_counter() - t0) * 1000.0
        parse = parse_chat_response if api == "chat" else parse_completions_response
        completion = parse(body, model=request.model, k=k)
        completion.latency_ms = latency_ms
        return completion

    async def _post(self, state: ModelState, api: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Send through the openai SDK and return the JSON body (raises MalformedResponse on garbage)."""
        client = self._client(state)
        resource = client.chat.completions if api == "chat" else client.completions
        raw = await resource.with_raw_response.create(**kwargs)
        return load_body(raw.content)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

