"""A 200 whose answer is no answer (content null, "", a JSON object) is garbage: retried, then a failed
item, never a paid "" answer. Against a real OpenAI-compatible server on 127.0.0.1, through both the
OpenAI-compatible backend and LiteLLM."""

from __future__ import annotations

import asyncio
import os

import pytest

from smartmix.backends.openai_compat import EndpointConfig, OpenAIBackend
from smartmix.backends.retry import Backoff
from smartmix.domain import Message, Request
from smartmix.errors import ProviderError

pytest_plugins = ["openai_fixtures"]

FAST = Backoff(base_s=0.01, max_s=0.05)
KINDS = ("null_content", "empty_content", "object_content")


def backend(provider, *, litellm: bool = False, max_attempts: int = 3) -> OpenAIBackend:
    if litellm:
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        os.environ.setdefault("SMARTMIX_TEST_LOCAL_KEY", "sk-local-test")
        pytest.importorskip("litellm")
        from smartmix.backends.litellm_backend import LiteLLMBackend

        config = EndpointConfig("m", provider_model="openai/test-model", base_url=provider.base_url,
                                api_key_env="SMARTMIX_TEST_LOCAL_KEY", max_attempts=max_attempts)
        return LiteLLMBackend({"m": config}, backoff=FAST)
    return OpenAIBackend({"m": EndpointConfig("m", base_url=provider.base_url, max_attempts=max_attempts)}, backoff=FAST)


def ask(b: OpenAIBackend, endpoint: str = "chat"):
    async def go():
        try:
            return await b.complete(Request("m", (Message("user", "2+2?"),), params=(("endpoint", endpoint),)))
        finally:
            await b.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("litellm", [False, True], ids=["openai", "litellm"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_or_non_text_answer_is_retried(provider, kind, litellm):
    provider.control.set_answers({"2+2?": "4"})
    provider.control.add_fault(kind, count=1)
    completion = ask(backend(provider, litellm=litellm))
    assert completion.text == "4"
    assert [e["outcome"] for e in provider.control.requests()] == [kind, "ok"]


@pytest.mark.parametrize("litellm", [False, True], ids=["openai", "litellm"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_that_stays_empty_fails_the_item(provider, kind, litellm):
    provider.control.add_fault(kind, fraction=1.0)
    with pytest.raises(ProviderError) as err:
        ask(backend(provider, litellm=litellm, max_attempts=3))
    message = str(err.value)
    assert "failed after 3 attempts" in message and "Traceback" not in message
    # ours, or litellm's own check (it refuses to build a response whose content is an object)
    assert "malformed response" in message or "Invalid response object" in message
    assert len(provider.control.paid) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_completions_endpoint_checks_text_too(provider, kind):
    provider.control.add_fault(kind, count=1)
    provider.control.set_answers({"2+2?": "4"})
    assert ask(backend(provider), "completions").text == "4"
    assert len(provider.control.paid) == 2


def test_a_run_reports_items_whose_answer_stays_null_as_failed_never_as_empty_answers(provider, tmp_path):
    """End to end (``smartmix.run`` on a job file's models): the reference answers ``content: null`` to
    about a third of the requests; with one attempt per call those items fail with a clear error, and no
    item ends with a paid "" answer."""
    from smartmix.api import config_job, run
    from smartmix.config import parse_config

    items = tmp_path / "items.csv"
    items.write_text("id,text\n" + "".join(f"{i},question {i}\n" for i in range(60)))
    provider.control.add_fault("null_content", fraction=0.3, seed=7)
    config = parse_config({
        "models": {"ref": {"base_url": provider.base_url, "input_price": 1.0, "output_price": 2.0,
                           "max_attempts": 1, "reference": True}},
        "task": {"template": "{text}", "labels": ["yes", "no"]},
    })
    result = run(job=config_job(config, items), method="reference", seed=0)
    nulls = sum(e["outcome"] == "null_content" for e in provider.control.requests())
    failed = [r for r in result.items if r.error is not None]
    assert nulls >= 5 and len(failed) == nulls
    assert all("content is null" in r.error and r.answer is None for r in failed)
    assert all(r.answer in ("yes", "no") for r in result.items if r.error is None)


def test_a_refusal_fails_the_item_at_once(provider):
    provider.control.add_fault("refusal", count=1)
    with pytest.raises(ProviderError) as err:
        ask(backend(provider, max_attempts=3))
    assert "refused to answer" in str(err.value) and "can't help" in str(err.value)
    assert len(provider.control.requests()) == 1  # asking again would be refused again


def test_json_nested_100k_deep_is_an_error_not_a_crash():
    """orjson alone overflows the C stack on such a document (the process dies); loads refuses it."""
    from smartmix.backends.http import loads

    for deep in (b"[" * 100_000 + b"]" * 100_000, b"{" + b'"a": {' * 100_000 + b"}" * 100_001):
        with pytest.raises(ValueError, match="nested too deeply"):
            loads(deep)
    assert loads(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
