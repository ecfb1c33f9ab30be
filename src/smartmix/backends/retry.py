"""Retries, backoff and rate limits shared by the real-provider backends.

A provider call goes through three gates, per model:

1. a concurrency bound (:class:`asyncio.Semaphore`, ``max_concurrency`` requests in flight),
2. a requests-per-minute limit (:class:`RateLimiter`, an async token bucket that also pauses the
   model when the provider answers 429 with ``Retry-After``),
3. the retry loop (:func:`call_with_retries`): at most ``max_attempts`` attempts in total, exponential
   backoff with *full jitter* between them, ``Retry-After`` honoured (seconds or an HTTP date, capped).

Only :class:`TransientError` is retried: 408/409/429/5xx, timeouts, dropped connections and garbage
bodies. Everything else (400, 401, 403, 404, programming errors) goes straight through, so a bad key
or a wrong model name costs one request, not six. When the attempts run out the last transient error
becomes an :class:`~smartmix.errors.ProviderError` that says what failed and what to do.

Why tenacity: it is the maintained, widely used retry library; its stop/wait/retry strategies are
small tested objects, ``wait_random_exponential`` *is* the AWS "full jitter" algorithm, and
``AsyncRetrying`` sleeps with asyncio so waiting requests never block the loop. We add only what it
lacks: honouring ``Retry-After``. The SDKs' own retry loops are switched off (``max_retries=0`` for
openai, ``num_retries=0`` for litellm) so every attempt is counted once, here, against one budget.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TypeVar

import tenacity
from tenacity.wait import wait_base, wait_random_exponential

from smartmix.errors import ProviderError

__all__ = [
    "Backoff",
    "ModelGate",
    "RateLimiter",
    "TransientError",
    "call_with_retries",
    "parse_retry_after",
    "redact",
]

log = logging.getLogger("smartmix.backends")

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts.

    The n-th retry waits a uniformly random time in ``[0, min(max_s, base_s * 2**(n-1))]`` ("full
    jitter": concurrent clients spread out instead of retrying in lockstep). When the provider sends
    ``Retry-After`` we wait that long (at most ``max_retry_after_s``) plus up to ``base_s`` of jitter.
    """

    base_s: float = 0.5
    max_s: float = 30.0
    max_retry_after_s: float = 60.0


class TransientError(Exception):
    """A failure worth another attempt: 429, 5xx, timeouts, dropped connections, garbage bodies.

    ``status`` is the HTTP status when there was one; ``retry_after`` the seconds the provider asked us
    to wait, when it said. The message must already be free of secrets (see :func:`redact`).
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    def describe(self) -> str:
        prefix = f"HTTP {self.status}: " if self.status is not None else ""
        return prefix + str(self)


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``; None if absent.

    Header names are matched case-insensitively; garbage gives None; a date in the past gives 0.
    """
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class _BackoffWait(wait_base):
    """tenacity wait strategy: full-jitter exponential backoff, or the provider's Retry-After."""

    def __init__(self, backoff: Backoff, rng: random.Random | None = None):
        self.backoff = backoff
        self.jitter = wait_random_exponential(multiplier=backoff.base_s, max=backoff.max_s)
        self.rng = rng or random.Random()

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, self.backoff.max_retry_after_s) + self.rng.uniform(0, self.backoff.base_s)
        return self.jitter(retry_state)


def backoff_wait(backoff: Backoff) -> wait_base:
    """The wait strategy :func:`call_with_retries` uses, exposed for tests and other retry loops."""
    return _BackoffWait(backoff)


DEFAULT_ADVICE = (
    "check that the endpoint is up and the model name is right, lower max_concurrency or "
    "requests_per_minute for this model, then rerun the same command: calls already paid for are kept "
    "in the journal and are not paid again"
)


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    *,
    model: str,
    max_attempts: int,
    backoff: Backoff = Backoff(),
    where: str = "",
    advice: str = DEFAULT_ADVICE,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[T, int]:
    """Run ``attempt(n)`` (n = 1, 2, ...) until it returns, retrying :class:`TransientError` only.

    Returns ``(result, attempts_used)``. After ``max_attempts`` transient failures raises
    :class:`~smartmix.errors.ProviderError` (with ``.model``, ``.status``, ``.attempts`` set) naming the
    model, the endpoint, the last error and what to do. Any other exception propagates at once.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    # Fast path: nearly every call succeeds at once, and setting up tenacity costs ~80 µs of CPU a call
    # (a tenth of the engine's whole per-call budget). The first failure is replayed into the tenacity
    # loop below, so waits, logging and attempt counts are exactly as if tenacity had run it.
    try:
        return await attempt(1), 1
    except TransientError as exc:
        first_failure: TransientError | None = exc

    async def attempt_replaying_first(n: int) -> T:
        nonlocal first_failure
        if first_failure is not None:
            failed, first_failure = first_failure, None
            raise failed
        return await attempt(n)

    used = 0

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        detail = exc.describe() if isinstance(exc, TransientError) else repr(exc)
        log.warning(
            "model %s: attempt %d/%d failed (%s); retrying in %.2fs",
            model, state.attempt_number, max_attempts, detail, wait,
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(max_attempts),
        wait=_BackoffWait(backoff),
        retry=tenacity.retry_if_exception_type(TransientError),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep,
    )
    try:
        async for state in retrying:
            with state:
                used = state.retry_state.attempt_number
                result = await attempt_replaying_first(used)
    except TransientError as exc:
        at = f" at {where}" if where else ""
        err = ProviderError(
            f"model '{model}'{at} failed after {used} attempt{'s' if used != 1 else ''}; "
            f"last error: {exc.describe()}. What to do: {advice}."
        )
        err.model, err.status, err.attempts = model, exc.status, used  # type: ignore[attr-defined]
        raise err from None
    return result, used


class RateLimiter:
    """Async token bucket: ``requests_per_minute`` starts per minute, bursts of at most ``burst``.

    Implemented as GCRA ("virtual scheduling"): each :meth:`acquire` reserves the next free start time
    synchronously (no await between read and write), then sleeps until it. That makes it fair (FIFO)
    and safe on one event loop without a lock. ``requests_per_minute=None`` means no limit, but
    :meth:`defer` still works: after a 429 with ``Retry-After`` nobody for this model starts early.
    """

    def __init__(
        self,
        requests_per_minute: float | None,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive (or None for no limit)")
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.tolerance = max(0.0, burst - 1.0) * self.interval
        self.clock = clock
        self._tat = 0.0  # theoretical arrival time of the next request
        self._paused_until = 0.0

    def reserve(self) -> float:
        """Reserve a start slot; returns how many seconds to wait for it."""
        now = self.clock()
        start = now
        if self.interval:
            tat = max(self._tat, now)
            start = max(now, tat - self.tolerance)
            self._tat = tat + self.interval
        start = max(start, self._paused_until)
        return start - now

    async def acquire(self) -> float:
        """Wait for a start slot; returns the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return max(wait, 0.0)

    def defer(self, seconds: float) -> None:
        """Start nothing for ``seconds`` from now (the provider said so)."""
        self._paused_until = max(self._paused_until, self.clock() + max(0.0, seconds))


class ModelGate:
    """The per-model concurrency bound and rate limit, entered once per attempt.

    Order matters: take a concurrency slot first, then wait for a rate slot, so that requests held back
    by the semaphore cannot pile up rate slots and then fire as a burst.
    """

    def __init__(self, max_concurrency: int, requests_per_minute: float | None):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.limiter = RateLimiter(requests_per_minute)
        self._slot = _Slot(self)

    def slot(self) -> _Slot:
        """``async with gate.slot():`` holds a concurrency slot and has waited for a rate slot."""
        return self._slot  # stateless, so one object serves every caller


class _Slot:
    """The async context manager of :meth:`ModelGate.slot` (a plain class: a served request enters one
    per call, and a generator-based context manager costs several times as much)."""

    __slots__ = ("gate",)

    def __init__(self, gate: ModelGate):
        self.gate = gate

    async def __aenter__(self) -> None:
        gate = self.gate
        await gate.semaphore.acquire()
        try:
            wait = gate.limiter.reserve()
            if wait > 0:
                await asyncio.sleep(wait)
        except BaseException:
            gate.semaphore.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.gate.semaphore.release()


def redact(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """Replace every secret (and any 8+ character head or tail of it) in ``text`` with ``***``."""
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        text = text.replace(secret, "***")
        if len(secret) >= 16:  # providers echo masked keys such as "sk-abc...wxyz"; hide the long parts
            text = text.replace(secret[:8], "***").replace(secret[-8:], "***")
    return text
