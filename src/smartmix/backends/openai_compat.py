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

HTTP goes through :mod:`smartmix.backends.http` (one keep-alive aiohttp session, orjson); attempts are
counted once, by :func:`smartmix.backends.retry.call_with_retries`, which owns backoff, ``Retry-After``
and the attempt budget. The response body is parsed here from the raw JSON so that garbage is detected
and retried like a 5xx: a body that is not JSON, has no ``choices``, or whose answer is not text or is
empty (``content: null``, ``""``, a JSON object). A provider bills such an answer, but it is no answer:
after ``max_attempts`` the item fails with a :class:`~smartmix.errors.ProviderError`, it never becomes a
paid ``""``. A refusal (``content: null`` with ``refusal``) fails at once: asking again would be refused again.

:meth:`OpenAIBackend.forward` and :meth:`OpenAIBackend.open_stream` send a client's request body as it
is (``smartmix serve``), under the same gates, timeout, retries and answer checks as :meth:`complete`.

API keys are read from the environment when the backend is built, are sent only in the Authorization
header, and are scrubbed from every message this module produces.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from smartmix import defaults
from smartmix.backends.http import HTTPStatusError, StreamResponse, Transport, dumps, loads
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
    "ENDPOINTS",
    "EndpointConfig",
    "MalformedResponse",
    "ModelState",
    "OpenAIBackend",
    "chat_top_logprobs",
    "check_forwarded",
    "completions_top_logprobs",
    "load_body",
    "parse_chat_response",
    "parse_completions_response",
]

log = logging.getLogger("smartmix.backends")

NO_KEY = "no-key"
_APIS = ("chat", "completions")
ENDPOINTS = {"chat": "/chat/completions", "completions": "/completions"}
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
    max_concurrency: int = defaults.MODEL_CONCURRENCY
    requests_per_minute: float | None = None
    timeout_s: float = defaults.TIMEOUT_S
    max_attempts: int = defaults.MAX_ATTEMPTS

    @property
    def sent_model(self) -> str:
        return self.provider_model or self.model

    @property
    def where(self) -> str:
        return self.base_url or defaults.BASE_URL

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


class Refused(Exception):
    """The model refused to answer (``content: null`` with ``refusal``): not retried, the item fails."""


def _as_body(answer: bytes | dict[str, Any]) -> dict[str, Any] | None:
    """A 2xx answer as a JSON object, or None when it is not one (garbage a provider still billed)."""
    if isinstance(answer, dict):
        return answer
    try:
        body = loads(answer)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def load_body(content: bytes | dict[str, Any]) -> dict[str, Any]:
    """A response body as a JSON object, or :class:`MalformedResponse` (retried like any garbage)."""
    body = _as_body(content)
    if body is None:
        snippet = bytes(content)[:80].decode("utf-8", "replace") if not isinstance(content, dict) else ""
        raise MalformedResponse(f"malformed response: body is not a JSON object ({snippet!r})")
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


def _cached_tokens(body: dict[str, Any]) -> int | None:
    """``usage.prompt_tokens_details.cached_tokens`` (OpenAI's prompt cache), when reported."""
    details = (body.get("usage") or {}).get("prompt_tokens_details") if isinstance(body.get("usage"), dict) else None
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


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
    if not isinstance(content, str) and message.get("refusal"):
        raise Refused(str(message["refusal"])[:300])
    _check_text(content, "message content")
    return _completion(body, choice, model, content, chat_top_logprobs(choice, k))


def _completion(
    body: dict[str, Any], choice: dict[str, Any], model: str, text: str, top: tuple[tuple[str, float], ...] | None
) -> Completion:
    """The :class:`Completion` of a checked answer: its text, the body's usage, the choice's finish reason."""
    inp, out = _usage(body)
    return Completion(
        model=model, text=text, input_tokens=inp, output_tokens=out, top_logprobs=top,
        extra={"finish_reason": choice.get("finish_reason")}, cached_tokens=_cached_tokens(body),
    )


def _check_text(value: Any, what: str) -> None:
    """An answer must be non-blank text: null, "", whitespace, a number or a JSON object is garbage."""
    if value is None:
        raise MalformedResponse(f"malformed response: {what} is null")
    if not isinstance(value, str):
        raise MalformedResponse(f"malformed response: {what} is {type(value).__name__}, not text")
    if not value.strip():
        raise MalformedResponse(f"malformed response: {what} is empty")


def parse_completions_response(body: dict[str, Any], *, model: str, k: int = 5) -> Completion:
    """A (legacy) completions JSON body as a :class:`Completion`; raises ``MalformedResponse`` on garbage."""
    choice = _first_choice(body)
    text = choice.get("text")
    _check_text(text, "choices[0].text")
    return _completion(body, choice, model, text, completions_top_logprobs(choice, k))


def check_forwarded(body: dict[str, Any] | None, api: str) -> dict[str, Any]:
    """A forwarded request's answer, checked like :meth:`OpenAIBackend.complete` checks its own: a JSON
    object with a first choice whose answer is non-blank text; on chat, a tool call or a refusal in
    place of text is an answer too. Raises ``MalformedResponse`` (retried) otherwise."""
    if body is None:
        raise MalformedResponse("malformed response: body is not a JSON object")
    choice = _first_choice(body)
    if api == "completions":
        _check_text(choice.get("text"), "choices[0].text")
        return body
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedResponse("malformed response: choices[0] has no message")
    content = message.get("content")
    if content is None and (message.get("tool_calls") or message.get("function_call") or message.get("refusal")):
        return body
    _check_text(content, "message content")
    return body


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
    message = str(message).split("Traceback (most recent call last)")[0]  # litellm embeds its own tracebacks
    return " ".join(message.split())[:300]


def _is_transport_error(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, TimeoutError | ConnectionError) or module in {"httpx", "httpx2", "httpcore", "h11", "anyio", "aiohttp"}


def classify_error(
    exc: BaseException, config: EndpointConfig, secrets: tuple[str, ...], *, sent_logprobs: bool, sent_max_tokens: bool
) -> BaseException:
    """Map a provider/SDK exception to what to do: TransientError (retry), _ParamRejected or ProviderError."""
    import openai

    status = getattr(exc, "status_code", None)
    if isinstance(exc, HTTPStatusError | openai.APIStatusError) or isinstance(status, int):
        status = int(status) if status is not None else getattr(exc.response, "status_code", None)
        text = redact(_error_text(exc), secrets)
        response = getattr(exc, "response", None)
        # litellm keeps the provider's headers apart; the openai SDK on the response
        headers = (
            getattr(exc, "litellm_response_headers", None) or getattr(response, "headers", None)
            or getattr(exc, "headers", None)
        )
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
        base = (config.base_url or "https://api.openai.com/v1").rstrip("/")
        self.urls = {api: base + path for api, path in ENDPOINTS.items()}
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        self.http_timeout: Any = None  # the transport's per-request timeout, made on first use


class _GatedStream:
    """A stream that holds its model's concurrency slot until it is closed."""

    def __init__(self, inner: Any, release: Callable[[], None]):
        self._inner = inner
        self._release = release
        self.status: int = inner.status
        self.headers: dict[str, str] = getattr(inner, "headers", {})

    def chunks(self) -> Any:
        return self._inner.chunks()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


PaidHook = Callable[[str, "dict[str, Any] | None"], None]


class OpenAIBackend:
    """A :class:`~smartmix.backends.base.Backend` for any OpenAI-compatible endpoint.

    ``endpoints`` maps smartmix model names to :class:`EndpointConfig`. Keys are read from the
    environment now (a missing variable is a :class:`~smartmix.errors.ConfigError` before anything is
    spent); the HTTP session is opened on first use, on the running event loop. Use one backend per event
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
        self.transport = Transport()

    def __repr__(self) -> str:  # never the keys
        return f"OpenAIBackend(models={sorted(self._states)})"

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._states)

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

    def endpoint(self, model: str) -> str:
        """Who answers ``model``: the API, base URL and provider model name (part of the journal's key)."""
        config = self._state(model).config
        return f"openai-compatible {config.api} {config.where.rstrip('/')} {config.sent_model}"

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
        try:
            return parse(body, model=request.model, k=k)
        except Refused as refusal:
            raise self._refused(state, str(refusal)) from None

    def _mapped(self, exc: Exception, state: ModelState, kwargs: Mapping[str, Any] = {}) -> BaseException:  # noqa: B006
        """A failed exchange as what to do about it (see :func:`classify_error`); a 429 with Retry-After
        also pauses the model."""
        mapped = classify_error(
            exc, state.config, self._secrets,
            sent_logprobs="logprobs" in kwargs, sent_max_tokens="max_tokens" in kwargs,
        )
        if isinstance(mapped, TransientError) and mapped.status == 429 and mapped.retry_after:
            state.gate.limiter.defer(min(mapped.retry_after, self.backoff.max_retry_after_s))
        return mapped

    async def _send(self, state: ModelState, request: Request) -> Completion:
        """One HTTP request: build it, send it under the timeout, classify failures, parse the answer."""
        config = state.config
        api = request.param("endpoint") or config.api
        if api not in _APIS:
            raise ConfigError(f"request for '{config.model}': endpoint must be 'chat' or 'completions', not {api!r}")
        kwargs, k = self._build_kwargs(state, request, api)
        t0 = time.perf_counter()
        try:
            body = load_body(await self._exchange(state, api, kwargs))
        except TransientError:
            raise
        except Exception as exc:  # classified below; re-raised unchanged if not a provider failure
            mapped = self._mapped(exc, state, kwargs)
            if mapped is exc:
                raise
            raise mapped from None
        latency_ms = (time.perf_counter() - t0) * 1000.0
        parse = parse_chat_response if api == "chat" else parse_completions_response
        try:
            completion = parse(body, model=request.model, k=k)
        except Refused as refusal:
            raise self._refused(state, str(refusal)) from None
        completion.latency_ms = latency_ms
        return completion

    def _refused(self, state: ModelState, text: str) -> ProviderError:
        err = ProviderError(
            f"model '{state.config.model}' refused to answer ({redact(text, self._secrets)}). Not retried: it "
            "would refuse again. The item has no answer from this model."
        )
        err.model, err.status, err.attempts = state.config.model, 200, 1  # type: ignore[attr-defined]
        return err

    async def _exchange(self, state: ModelState, api: str, payload: dict[str, Any]) -> bytes | dict[str, Any]:
        """Send one request within the model's ``timeout_s``; the body of a 2xx answer (raw bytes here; a
        dict from litellm)."""
        if state.http_timeout is None:
            state.http_timeout = self.transport.timeout(state.config.timeout_s)
        return await self.transport.post_json(state.urls[api], dumps(payload), state.headers, state.http_timeout)

    # -------------------------------------------------------------------------- forwarding (serve)

    async def forward(
        self, model: str, body: Mapping[str, Any], api: str, *, on_paid: PaidHook | None = None
    ) -> dict[str, Any]:
        """Send a client's request ``body`` to ``model`` as it is (``model`` replaced by the provider's
        name) and return the provider's JSON answer, with this model's concurrency bound, rate limit,
        timeout and retries. A garbage answer (see :func:`check_forwarded`) is retried like a 5xx.

        ``on_paid(model, answer)`` is called for every 2xx answer, usable or not (``None`` when it is not
        a JSON object): each is a call the provider bills. Raises
        :class:`~smartmix.errors.ProviderError` when the attempts run out or the provider refuses the request.
        """
        state = self._state(model)
        config = state.config
        if api not in _APIS:
            raise ConfigError(f"request for '{model}': endpoint must be 'chat' or 'completions', not {api!r}")
        payload = dict(body, model=config.sent_model)

        async def attempt(_n: int) -> dict[str, Any]:
            async with state.gate.slot():
                try:
                    raw = await self._exchange(state, api, payload)
                except TransientError:
                    raise
                except Exception as exc:
                    mapped = self._mapped(exc, state)
                    if mapped is exc:
                        raise
                    raise mapped from None
            answer = _as_body(raw)
            if on_paid is not None:
                on_paid(model, answer)
            return check_forwarded(answer, api)

        result, _ = await call_with_retries(
            attempt, model=config.model, max_attempts=config.max_attempts, backoff=self.backoff, where=config.where
        )
        return result

    async def open_stream(self, model: str, body: Mapping[str, Any], api: str) -> _GatedStream:
        """Send a client's streaming request to ``model`` and return the answer unread: ``status``,
        ``chunks()`` (server-sent events as bytes) and ``close()``. The model's concurrency slot is held
        until ``close()``. Retried like :meth:`forward` until the answer starts; not after."""
        state = self._state(model)
        config = state.config
        payload = dict(body, model=config.sent_model)

        async def attempt(_n: int) -> _GatedStream:
            await state.gate.semaphore.acquire()
            try:
                await state.gate.limiter.acquire()
                async with asyncio.timeout(config.timeout_s):
                    inner = await self._open_stream(state, api, payload)
            except BaseException as exc:
                state.gate.semaphore.release()
                if isinstance(exc, Exception) and not isinstance(exc, TransientError):
                    mapped = self._mapped(exc, state)
                    if mapped is not exc:
                        raise mapped from None
                raise
            return _GatedStream(inner, state.gate.semaphore.release)

        stream, _ = await call_with_retries(
            attempt, model=config.model, max_attempts=config.max_attempts, backoff=self.backoff, where=config.where
        )
        return stream

    async def _open_stream(self, state: ModelState, api: str, payload: dict[str, Any]) -> StreamResponse | Any:
        return await self.transport.open_stream(state.urls[api], dumps(payload), state.headers)

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
