"""The retry policy on its own: Retry-After parsing, backoff bounds, attempt budget, rate limiter."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time

import pytest
import tenacity

from smartmix.backends.retry import (
    Backoff,
    ModelGate,
    RateLimiter,
    TransientError,
    backoff_wait,
    call_with_retries,
    parse_retry_after,
    redact,
)
from smartmix.errors import ConfigError, ProviderError


def test_parse_retry_after_seconds_ms_and_dates():
    now = 1_700_000_000.0
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(7.0)
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "-4"}) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "nan"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None


def _state(attempt: int, exc: BaseException) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_backoff_is_full_jitter_and_capped():
    random.seed(1)
    wait = backoff_wait(Backoff(base_s=0.5, max_s=4.0))
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0)]:
        samples = [wait(_state(attempt, TransientError("x"))) for _ in range(300)]
        assert 0.0 <= min(samples) and max(samples) <= ceiling
        assert max(samples) > 0.7 * ceiling  # spread over the whole window, not a fixed delay
        assert min(samples) < 0.3 * ceiling


def test_backoff_honours_and_caps_retry_after():
    wait = backoff_wait(Backoff(base_s=0.1, max_s=4.0, max_retry_after_s=10.0))
    honoured = [wait(_state(1, TransientError("x", status=429, retry_after=3.0))) for _ in range(50)]
    assert all(3.0 <= w <= 3.1 for w in honoured)
    capped = [wait(_state(1, TransientError("x", status=429, retry_after=3600.0))) for _ in range(50)]
    assert all(10.0 <= w <= 10.1 for w in capped)


def test_retries_transient_errors_until_success():
    calls = []

    async def attempt(n):
        calls.append(n)
        if n < 3:
            raise TransientError("boom", status=503)
        return "ok"

    result, used = asyncio.run(
        call_with_retries(attempt, model="m", max_attempts=5, backoff=Backoff(base_s=0.001, max_s=0.01))
    )
    assert (result, used, calls) == ("ok", 3, [1, 2, 3])


def test_gives_up_after_max_attempts_with_a_message_that_says_what_to_do():
    calls = []

    async def attempt(n):
        calls.append(n)
        raise TransientError("The server had an error", status=500)

    with pytest.raises(ProviderError) as info:
        asyncio.run(call_with_retries(attempt, model="big-model", max_attempts=4,
                                      backoff=Backoff(base_s=0.001), where="http://127.0.0.1:1/v1"))
    assert calls == [1, 2, 3, 4]
    message = str(info.value)
    assert "big-model" in message and "4 attempts" in message and "HTTP 500" in message
    assert "http://127.0.0.1:1/v1" in message and "journal" in message and "rerun" in message
    assert (info.value.model, info.value.status, info.value.attempts) == ("big-model", 500, 4)
    assert info.value.__suppress_context__


def test_other_errors_are_not_retried():
    calls = []

    async def attempt(n):
        calls.append(n)
        raise ConfigError("bad")

    with pytest.raises(ConfigError):
        asyncio.run(call_with_retries(attempt, model="m", max_attempts=5, backoff=Backoff(base_s=0.001)))
    assert calls == [1]


def test_sleeps_what_the_wait_strategy_says():
    slept = []

    async def fake_sleep(s):
        slept.append(s)

    async def attempt(n):
        if n == 1:
            raise TransientError("slow down", status=429, retry_after=2.0)
        return n

    asyncio.run(call_with_retries(attempt, model="m", max_attempts=3, backoff=Backoff(base_s=0.05), sleep=fake_sleep))
    assert len(slept) == 1 and 2.0 <= slept[0] <= 2.05


def test_rate_limiter_spaces_starts():
    async def main():
        limiter = RateLimiter(requests_per_minute=1200)  # one start per 50 ms
        t0 = time.monotonic()
        starts = []
        for _ in range(6):
            await limiter.acquire()
            starts.append(time.monotonic() - t0)
        return starts

    starts = asyncio.run(main())
    assert starts[0] < 0.03
    assert starts[-1] >= 5 * 0.05 - 0.01
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.04


def test_rate_limiter_burst_and_virtual_clock():
    now = [100.0]
    limiter = RateLimiter(60, burst=3, clock=lambda: now[0])  # 1/s, bursts of 3
    waits = [limiter.reserve() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(1.0) and waits[4] == pytest.approx(2.0)


def test_rate_limiter_defer_pauses_even_without_a_limit():
    now = [0.0]
    limiter = RateLimiter(None, clock=lambda: now[0])
    assert limiter.reserve() == 0.0
    limiter.defer(2.5)
    assert limiter.reserve() == pytest.approx(2.5)
    now[0] = 3.0
    assert limiter.reserve() == 0.0


def test_model_gate_bounds_concurrency():
    async def main():
        gate = ModelGate(max_concurrency=3, requests_per_minute=None)
        active, peak = 0, 0

        async def job():
            nonlocal active, peak
            async with gate.slot():
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.01)
                active -= 1

        await asyncio.gather(*(job() for _ in range(12)))
        return peak

    assert asyncio.run(main()) == 3


def test_redact_hides_keys_and_their_masked_forms():
    key = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123"
    text = f"Incorrect API key provided: {key}; also sk-proj-...Z0123 and {key[-8:]}"
    out = redact(text, (key,))
    assert key not in out and key[-8:] not in out and key[8:20] not in out
