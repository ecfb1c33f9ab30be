"""OpenAIBackend against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

import pytest
from openai_server import RunningServer, start_server_process

from smartmix.backends.base import Backend
from smartmix.backends.openai_compat import (
    EndpointConfig,
    OpenAIBackend,
    completions_prompt,
    parse_chat_response,
    parse_completions_response,
)
from smartmix.backends.retry import Backoff
from smartmix.domain import Message, Request
from smartmix.errors import ConfigError, MissingExtraError, ProviderError, UnknownModelError

FAST = Backoff(base_s=0.01, max_s=0.05)
pytest_plugins = ["openai_fixtures"]  # the `provider` fixture: a live test server on 127.0.0.1

KEY_ENV = "SMARTMIX_TEST_OPENAI_KEY"
SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def req(prompt: str = "Is the sky blue?", model: str = "m", system: str | None = None, **params) -> Request:
    messages = ((Message("system", system),) if system else ()) + (Message("user", prompt),)
    return Request(model=model, messages=messages, item_id="item-1", params=tuple(sorted(params.items())))


def backend(srv: RunningServer, *, model: str = "m", backoff: Backoff = FAST, **config) -> OpenAIBackend:
    return OpenAIBackend({model: EndpointConfig(model=model, base_url=srv.base_url, **config)}, backoff=backoff)


def complete(b: OpenAIBackend, *requests: Request):
    async def main():
        try:
            return await asyncio.gather(*(b.complete(r) for r in requests))
        finally:
            await b.aclose()

    results = asyncio.run(main())
    return results[0] if len(results) == 1 else results


# ------------------------------------------------------------------------------------------ happy paths


def test_chat_with_usage_and_logprobs(provider):
    provider.control.set_answers({"Is the sky blue?": "yes"})
    provider.control.set_top_logprobs("provider-name", [("no", -2.0), ("yes", -0.1), ("maybe", -4.0)])
    b = backend(provider, provider_model="provider-name")
    assert isinstance(b, Backend)
    c = complete(b, req(system="Answer yes or no.", logprobs=True, top_logprobs=2, max_tokens=3))
    assert c.model == "m" and c.text == "yes"
    assert (c.input_tokens, c.output_tokens) == (8, 1)  # words in "Answer yes or no.\n\nIs the sky blue?"
    assert c.top_logprobs == (("yes", -0.1), ("no", -2.0))  # most likely first, k = 2
    assert c.cost_usd is None and c.latency_ms > 0 and c.extra["attempts"] == 1
    [sent] = provider.control.requests()
    assert sent["model"] == "provider-name" and sent["logprobs"] is True
    assert sent["params"] == {"temperature": 0, "max_tokens": 3, "top_logprobs": 2}


def test_completions_endpoint_joins_system_then_user(provider):
    provider.control.set_top_logprobs("m", [("A", -0.3), ("B", -1.5)])
    provider.control.set_answers(lambda model, prompt: "A" if prompt.startswith("Be brief.") else "wrong")
    request = req("Pick A or B", system="Be brief.", logprobs=True, temperature=0.7)
    assert completions_prompt(request) == "Be brief.\n\nPick A or B"
    c = complete(backend(provider, api="completions"), request)
    assert c.text == "A" and c.top_logprobs == (("A", -0.3), ("B", -1.5))
    assert (c.input_tokens, c.output_tokens) == (6, 1)
    [sent] = provider.control.requests()
    assert sent["endpoint"] == "completions" and sent["prompt"] == "Be brief.\n\nPick A or B"
    assert sent["params"]["temperature"] == 0.7


def test_parsers_rank_alternatives_and_tolerate_odd_logprobs():
    chat = {"choices": [{"message": {"content": "B"}, "logprobs": {"content": [{"token": "B", "logprob": -0.2,
             "top_logprobs": [{"token": "A", "logprob": -1.9}, {"token": "B", "logprob": -0.2},
                              {"token": "C", "logprob": "bad"}]}]}}]}
    assert parse_chat_response(chat, model="m").top_logprobs == (("B", -0.2), ("A", -1.9))
    chat["choices"][0]["logprobs"] = {"content": []}
    assert parse_chat_response(chat, model="m").top_logprobs is None
    text = {"choices": [{"text": " B", "logprobs": {"top_logprobs": [{" A": -2.0, " B": -0.1, " C": -3.0}]}}]}
    assert parse_completions_response(text, model="m", k=2).top_logprobs == ((" B", -0.1), (" A", -2.0))


def test_no_logprobs_unless_asked(provider):
    c = complete(backend(provider), req())
    assert c.top_logprobs is None and provider.control.requests()[0]["logprobs"] is False


def test_provider_that_omits_logprobs(provider):
    provider.control.set_logprobs_mode("m", "omit")
    c = complete(backend(provider), req(logprobs=True))
    assert c.top_logprobs is None and c.text in {"yes", "no"} and c.extra["attempts"] == 1


def test_provider_that_rejects_logprobs_is_asked_again_without_and_remembered(provider):
    provider.control.set_logprobs_mode("m", "reject")
    b = backend(provider)

    async def main():
        first = await b.complete(req("q1", logprobs=True))
        second = await b.complete(req("q2", logprobs=True))
        await b.aclose()
        return first, second

    first, second = asyncio.run(main())
    assert first.top_logprobs is None and first.extra["attempts"] == 2
    assert first.extra["logprobs_unsupported"] is True
    assert second.top_logprobs is None and second.extra["attempts"] == 1
    log = provider.control.requests()
    assert [e["outcome"] for e in log] == ["rejected_logprobs", "ok", "ok"]
    assert [e["logprobs"] for e in log] == [True, False, False]


# ---------------------------------------------------------------------------------------------- retries


def test_429_retry_after_is_honoured(provider):
    provider.control.add_fault("rate_limit", count=1, retry_after="1")
    t0 = time.monotonic()
    c = complete(backend(provider), req())
    waited = time.monotonic() - t0
    print(f"\n429 with Retry-After: 1 -> answered after {waited:.2f}s")
    assert c.extra["attempts"] == 2
    assert 1.0 <= waited < 3.0
    log = provider.control.requests()
    assert [e["outcome"] for e in log] == ["rate_limit", "ok"]
    assert log[1]["t"] - log[0]["t_done"] >= 0.99


def test_500s_then_success(provider):
    provider.control.add_fault("error", count=2, status=500)
    provider.control.add_fault("error", count=1, status=503)
    c = complete(backend(provider), req())
    assert c.extra["attempts"] == 4
    assert [e["outcome"] for e in provider.control.requests()] == ["error", "error", "error", "ok"]


def test_slow_response_past_timeout_then_success(provider):
    provider.control.add_fault("slow", count=1, delay_s=1.5)
    t0 = time.monotonic()
    c = complete(backend(provider, timeout_s=0.3), req())
    assert c.extra["attempts"] == 2
    assert time.monotonic() - t0 < 1.4  # did not wait for the slow answer


def test_dropped_connection_is_retried(provider):
    provider.control.add_fault("drop", count=2)
    c = complete(backend(provider), req())
    assert c.extra["attempts"] == 3
    assert [e["outcome"] for e in provider.control.requests()] == ["drop", "drop", "ok"]


@pytest.mark.parametrize("kind", ["malformed", "garbage", "no_choices"])
def test_malformed_responses_are_retried(provider, kind):
    provider.control.add_fault(kind, count=1)
    c = complete(backend(provider, api="chat"), req())
    assert c.extra["attempts"] == 2 and c.text in {"yes", "no"}
    assert [e["outcome"] for e in provider.control.requests()] == [kind, "ok"]


def test_malformed_completions_response_is_retried(provider):
    provider.control.add_fault("malformed", count=1)
    c = complete(backend(provider, api="completions"), req())
    assert c.extra["attempts"] == 2


def test_exhausted_attempts_raise_a_clear_provider_error_without_the_key(provider, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    provider.control.require_api_key(SECRET)
    provider.control.add_fault("error", count=100, status=502)
    b = backend(provider, api_key_env=KEY_ENV, max_attempts=3)
    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as info:
        complete(b, req())
    message = str(info.value)
    print("\n" + message)
    assert "'m'" in message and "3 attempts" in message and "HTTP 502" in message
    assert provider.base_url in message and "rerun" in message and "journal" in message
    assert info.value.attempts == 3 and info.value.status == 502
    assert len(provider.control.requests()) == 3
    for text in (message, repr(info.value), repr(b), caplog.text):
        assert SECRET not in text and SECRET[8:24] not in text


def test_401_is_not_retried_and_names_the_env_var_not_the_key(provider, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    provider.control.require_api_key("sk-the-right-key")  # the server echoes the wrong key back
    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as info:
        complete(backend(provider, api_key_env=KEY_ENV), req())
    message = str(info.value)
    print("\n" + message)
    assert "401" in message and KEY_ENV in message
    assert SECRET not in message and SECRET not in caplog.text and SECRET[-8:] not in message
    assert len(provider.control.requests()) == 1


def test_out_of_quota_429_is_not_retried(provider):
    provider.control.add_fault("rate_limit", count=5, status=402, retry_after="1")
    with pytest.raises(ProviderError, match="quota") as info:
        complete(backend(provider), req())
    assert info.value.attempts == 1 and len(provider.control.requests()) == 1


@pytest.mark.parametrize("status", [400, 404])
def test_other_client_errors_are_not_retried(provider, status):
    provider.control.add_fault("error", count=5, status=status)
    with pytest.raises(ProviderError) as info:
        complete(backend(provider), req())
    assert f"HTTP {status}" in str(info.value)
    assert len(provider.control.requests()) == 1


def test_missing_key_env_var_is_a_config_error_naming_it(monkeypatch):
    monkeypatch.delenv("SMARTMIX_TEST_UNSET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SMARTMIX_TEST_UNSET_KEY"):
        OpenAIBackend({"m": EndpointConfig("m", api_key_env="SMARTMIX_TEST_UNSET_KEY")})


def test_unknown_model_and_bad_config():
    b = OpenAIBackend({"m": EndpointConfig("m", base_url="http://127.0.0.1:9/v1")})
    with pytest.raises(UnknownModelError, match="'other'"):
        asyncio.run(b.complete(req(model="other")))
    with pytest.raises(ConfigError, match="api"):
        OpenAIBackend({"m": EndpointConfig("m", api="responses")})


# ------------------------------------------------------------------------------------------------ limits


def test_concurrency_bound_is_respected(provider):
    provider.control.delay_s = 0.1
    b = backend(provider, max_concurrency=3)
    results = complete(b, *(req(f"q{i}") for i in range(12)))
    assert len(results) == 12 and all(r.extra["attempts"] == 1 for r in results)
    assert provider.control.max_in_flight == 3


def test_requests_per_minute_limit(provider):
    b = backend(provider, requests_per_minute=1200, max_concurrency=16)  # one start per 50 ms

    async def main():
        await b.complete(req("warm-up"))  # SDK client and first connection set up outside the timing
        t0 = time.monotonic()
        await asyncio.gather(*(b.complete(req(f"q{i}")) for i in range(10)))
        elapsed = time.monotonic() - t0
        await b.aclose()
        return elapsed

    elapsed = asyncio.run(main())
    starts = sorted(e["t"] for e in provider.control.requests())
    assert len(starts) == 11
    assert elapsed >= 9 * 0.05 - 0.01  # the 10 starts after the warm-up are 50 ms apart
    # What the provider sees (arrivals jitter with machine load, so only roughly): not a burst.
    gathered = starts[1:]  # the warm-up's arrival is late by the connection set-up
    assert gathered[-1] - gathered[0] >= 0.3


def test_litellm_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "litellm", None)  # makes "import litellm" fail, installed or not
    from smartmix.backends.litellm_backend import LiteLLMBackend

    with pytest.raises(MissingExtraError, match=r"pip install 'smartmix\[litellm\]'"):
        LiteLLMBackend({"m": EndpointConfig("m", provider_model="openai/gpt-4o-mini")})


def test_server_as_a_subprocess_keeps_its_log_on_disk(tmp_path):
    log_path = tmp_path / "requests.jsonl"
    faults = [{"kind": "error", "count": 1, "status": 500}]
    with start_server_process(log_path=log_path, answers={"2+2?": "4"}, faults=faults) as proc:
        b = OpenAIBackend({"m": EndpointConfig("m", base_url=proc.base_url)}, backoff=FAST)
        c = complete(b, req("2+2?"))
        assert c.text == "4" and c.extra["attempts"] == 2
        proc.control("fault", kind="rate_limit", count=1, retry_after="0")
        assert complete(OpenAIBackend({"m": EndpointConfig("m", base_url=proc.base_url)}, backoff=FAST),
                        req("2+2?")).extra["attempts"] == 2
        proc.process.kill()  # the log is flushed per request: nothing is lost with the server
        proc.process.wait()
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(e["outcome"], e["paid"]) for e in entries] == [
        ("error", False), ("ok", True), ("rate_limit", False), ("ok", True)
    ]
