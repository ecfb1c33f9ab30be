"""``smartmix serve``: input limits, the cascade's tie rule and cost, the journal under odd answers, and
models called through the batch backends (limits, LiteLLM). A real upstream on 127.0.0.1 throughout."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest
from openai_server import run_server
from test_server import KEY, Served, job, journal_calls, stop

from smartmix.config import parse_config
from smartmix.serve import create_app

HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def upstream():
    with run_server() as srv:
        yield srv


@pytest.fixture
def served(upstream, tmp_path):
    upstream.control.reset()
    raw = job(upstream.base_url, tmp_path)
    raw["server"]["max_body_bytes"] = 1_000_000
    with Served(create_app(parse_config(raw))) as s:
        yield s


def post(served, body=None, content=None, path="/chat/completions"):
    return httpx.post(served.base_url + path, json=body, content=content, headers=HEADERS, timeout=30)


# --------------------------------------------------------------------------------------- request limits


def test_a_body_over_the_limit_is_refused_with_413_before_anything_is_paid(served, upstream):
    big = {"model": "big", "messages": [{"role": "user", "content": "x" * 1_200_000}]}
    r = post(served, big)
    assert r.status_code == 413 and "1,000,000 bytes" in r.json()["error"]["message"]

    async def chunked():  # no Content-Length: counted as it arrives
        async def body():
            for _ in range(130):
                yield b"x" * 10_000

        async with httpx.AsyncClient() as c:
            return await c.post(served.base_url + "/chat/completions", content=body(), headers=HEADERS)

    assert asyncio.run(chunked()).status_code == 413
    assert upstream.control.requests() == []


def test_default_body_limit_refuses_a_10_mb_prompt(upstream, tmp_path):
    upstream.control.reset()
    with Served(create_app(parse_config(job(upstream.base_url, tmp_path)))) as s:
        r = post(s, {"model": "big", "messages": [{"role": "user", "content": "x" * 10_000_000}]})
    assert r.status_code == 413 and upstream.control.requests() == []


def test_deeply_nested_json_is_a_400_without_a_traceback(served, upstream, capfd, caplog):
    deep = b"[" * 100_000 + b"]" * 100_000
    r = post(served, content=deep)
    assert r.status_code == 400
    for nested in (deep, b"{" + b'"a": {' * 100_000 + b"}" * 100_000 + b"}"):
        r = post(served, content=b'{"model": "big", "messages": [{"role": "user", "content": "x"}], "x": ' + nested + b"}")
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
    assert upstream.control.requests() == []
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err + caplog.text and "Traceback" not in r.text


@pytest.mark.parametrize("body, says", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "no 'model'"),
    ({"model": 7, "messages": [{"role": "user", "content": "hi"}]}, "'model' must be text"),
    ({"model": "big"}, "no 'messages'"),
    ({"model": "big", "messages": []}, "non-empty list"),
    ({"model": "big", "messages": "hi"}, "non-empty list"),
    ({"model": "big", "messages": ["hi"]}, "messages[0] must be an object"),
    ({"model": "big", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role must be one of"),
    ({"model": "big", "messages": [{"role": "user", "content": "a"}, {"role": "user"}]}, "messages[1] has no 'content'"),
    ({"model": "big", "messages": [{"role": "user", "content": None}]}, "messages[0].content is null"),
    ({"model": "big", "messages": [{"role": "user", "content": {"text": "hi"}}]}, "must be text or a non-empty list"),
    ({"model": "big", "messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]}, "content[0].type"),
    ({"model": "big", "messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "content[0].text"),
    ({"model": "big", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "'stream' must be"),
])
def test_bad_requests_are_400_saying_what_is_wrong(served, upstream, body, says):
    r = post(served, body)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]["message"]
    assert upstream.control.requests() == []


def test_good_message_shapes_are_forwarded(served, upstream):
    upstream.control.set_answers(lambda model, prompt: "fine")
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function",
                                                                "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t", "content": "42"},
    ]
    assert post(served, {"model": "big", "messages": messages}).status_code == 200
    r = post(served, {"model": "cheap"}, path="/completions")
    assert r.status_code == 400 and "no 'prompt'" in r.json()["error"]["message"]
    assert post(served, {"model": "cheap", "prompt": ["a", "b"]}, path="/completions").status_code == 200


# ----------------------------------------------------------------------------------------- the cascade


def test_cascade_reported_cost_includes_the_cheap_call_paid_before_escalating(served, upstream):
    upstream.control.set_answers(lambda model, prompt: "yes")
    upstream.control.set_top_logprobs("cheap", [("yes", math.log(0.5)), ("no", math.log(0.45))])
    r = post(served, {"model": "auto", "messages": [{"role": "user", "content": "q"}]})
    body = r.json()
    assert body["smartmix"]["escalated"] and body["smartmix"]["model"] == "big"
    direct = post(served, {"model": "big", "messages": [{"role": "user", "content": "q"}]}).json()["smartmix"]["cost_usd"]
    cheap = post(served, {"model": "cheap", "messages": [{"role": "user", "content": "q"}]}).json()["smartmix"]["cost_usd"]
    assert body["smartmix"]["cost_usd"] == pytest.approx(direct + cheap) and cheap > 0
    assert float(r.headers["x-smartmix-cost-usd"]) == pytest.approx(direct + cheap)


def test_cascade_keeps_only_a_score_strictly_above_the_threshold(upstream, tmp_path):
    """The batch rule: keep iff score > threshold. A score exactly at the threshold escalates."""
    from smartmix.domain import Completion
    from smartmix.scores import confidence_score

    pairs = [("yes", math.log(0.8)), ("no", math.log(0.2))]
    score = confidence_score(Completion("cheap", "yes", top_logprobs=tuple(pairs)))
    upstream.control.reset()
    upstream.control.set_answers(lambda model, prompt: "yes")
    upstream.control.set_top_logprobs("cheap", pairs)
    for threshold, kept in [(score, False), (math.nextafter(score, 0), True)]:
        raw = job(upstream.base_url, tmp_path, threshold=threshold)
        with Served(create_app(parse_config(raw))) as s:
            got = post(s, {"model": "auto", "messages": [{"role": "user", "content": "q"}]}).json()["smartmix"]
        assert got["model"] == ("cheap" if kept else "big"), (threshold, score)


def test_cascade_escalates_when_the_cheap_model_fails(served, upstream):
    upstream.control.set_answers(lambda model, prompt: "yes")
    upstream.control.add_fault("error", count=2, model="cheap")  # max_attempts = 2
    body = post(served, {"model": "auto", "messages": [{"role": "user", "content": "q"}]}).json()
    assert body["smartmix"]["model"] == "big" and body["smartmix"]["escalated"]


# -------------------------------------------------------------------------- the journal under odd answers


def test_journal_rows_equal_the_upstreams_paid_calls_under_odd_answers(upstream, tmp_path):
    upstream.control.reset()
    upstream.control.set_answers(lambda model, prompt: "yes")
    upstream.control.set_top_logprobs("cheap", [("yes", math.log(0.5)), ("no", math.log(0.45))])
    for i, kind in enumerate(["object_content", "null_content", "empty_content", "garbage", "no_choices", "error"]):
        upstream.control.add_fault(kind, fraction=0.08, seed=i)
    raw = job(upstream.base_url, tmp_path, max_attempts=3)
    served = Served(create_app(parse_config(raw)))
    n = 240

    async def burst(base_url: str):
        async with httpx.AsyncClient(base_url=base_url, headers=HEADERS, timeout=60) as h:
            return await asyncio.gather(*(
                h.post("/chat/completions", json={"model": ("big", "auto", "cheap")[i % 3],
                                                  "messages": [{"role": "user", "content": f"q{i}"}]})
                for i in range(n)
            ))

    with served:
        replies = asyncio.run(burst(served.base_url))
        writer = served.server.config.app.state.journal_writer
        stop(served)
    paid = upstream.control.paid
    outcomes = {e["outcome"] for e in paid}
    assert {"object_content", "null_content", "garbage", "ok"} <= outcomes
    runs, calls = journal_calls(tmp_path / "server.sqlite")
    assert len(calls) == len(paid) and writer.failed == 0
    assert sum(1 for c in calls if c["model"] == "cheap") == sum(1 for e in paid if e["model"] == "cheap")
    ok = [r for r in replies if r.status_code == 200]
    assert len(ok) >= n * 0.9 and all(r.status_code == 502 for r in replies if r.status_code != 200)
    assert all(isinstance(r.json()["choices"][0]["message"]["content"], str) and r.json()["choices"][0]["message"]["content"] for r in ok)
    # the bill: what the clients were told they paid for answered requests is in the journal
    assert runs[0].cost_usd >= sum(r.json()["smartmix"]["cost_usd"] for r in ok) - 1e-12


def test_one_unstorable_row_never_costs_its_batch(tmp_path):
    from smartmix.domain import Completion, Message, Request
    from smartmix.journal import Journal
    from smartmix.journal_writer import BackgroundJournalWriter

    journal = Journal(tmp_path / "j.sqlite")
    journal.start_run("r", {}, 0)
    writer = BackgroundJournalWriter(journal, "r")
    request = Request("m", (Message("user", "x"),))
    with journal._lock:  # hold the writer so that all rows land in one batch
        for i in range(50):
            writer.record(request, Completion("m", f"a{i}"), "serve", 0.01)
        writer.record(request, Completion("m", {"answer": "yes"}), "serve", 0.01)  # type: ignore[arg-type]
        writer.record(request, Completion("m", "b", input_tokens="many"), "serve", math.nan)  # type: ignore[arg-type]
        writer.record(request, Completion("m", ["x", 1]), "serve", "0.01")  # type: ignore[arg-type]
    writer.close()
    calls = journal.calls("r")
    assert len(calls) == 53 and writer.failed == 0
    assert calls[50]["answer"] == '{"answer": "yes"}'
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(0.51)
    journal.close()


# ------------------------------------------------------------------ one transport: the batch backends


def test_served_models_keep_their_max_concurrency_and_max_attempts(upstream, tmp_path):
    upstream.control.reset()
    upstream.control.set_answers(lambda model, prompt: "ok")
    upstream.control.delay_s = 0.2
    raw = job(upstream.base_url, tmp_path)
    raw["models"]["big"].update(max_concurrency=2, max_attempts=4)

    async def burst(base_url: str):
        async with httpx.AsyncClient(base_url=base_url, headers=HEADERS, timeout=60) as h:
            return await asyncio.gather(*(
                h.post("/chat/completions", json={"model": "big", "messages": [{"role": "user", "content": f"{i}"}]})
                for i in range(8)
            ))

    with Served(create_app(parse_config(raw))) as s:
        assert all(r.status_code == 200 for r in asyncio.run(burst(s.base_url)))
        assert upstream.control.max_in_flight == 2
        upstream.control.delay_s = 0.0
        upstream.control.add_fault("error", count=3)
        assert post(s, {"model": "big", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
    assert len(upstream.control.requests()) == 8 + 4


def test_a_litellm_model_is_served_through_litellm(upstream, tmp_path, monkeypatch):
    pytest.importorskip("litellm")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("SMARTMIX_TEST_LOCAL_KEY", "sk-local-test")
    upstream.control.reset()
    upstream.control.set_answers(lambda model, prompt: f"{model} answers")
    raw = job(upstream.base_url, tmp_path)
    raw["models"]["claude"] = {"litellm": "openai/local-claude", "base_url": upstream.base_url,
                               "api_key_env": "SMARTMIX_TEST_LOCAL_KEY", "input_price": 1.0, "output_price": 2.0}
    with Served(create_app(parse_config(raw))) as s:
        r = post(s, {"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "local-claude answers"
        assert r.json()["smartmix"]["cost_usd"] > 0
        streamed = httpx.post(s.base_url + "/chat/completions", headers=HEADERS, timeout=30, json={
            "model": "claude", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        assert streamed.status_code == 200 and "local-claude" in streamed.text and "[DONE]" in streamed.text
    seen = upstream.control.requests()
    # LiteLLM strips its provider prefix and calls the api_base with the provider's model name
    assert [e["model"] for e in seen] == ["local-claude", "local-claude"]


def test_faults_serve_harness_smoke():
    """benchmarks/faults_serve.py on a few requests: the real `smartmix serve` command under garbage."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from faults_serve import run_serve_garbage

    row = run_serve_garbage(n_requests=45, clients=6)
    assert set(row) == {"scenario", "paid_twice", "items_lost", "items_duplicated", "bill_usd", "server_usd",
                        "cap_overshoot_usd", "journal_rows", "server_paid_calls", "notes"}
    assert row["journal_rows"] == row["server_paid_calls"] > 45
    assert row["items_lost"] == 0 and row["items_duplicated"] == 0 and row["paid_twice"] == 0
    assert row["bill_usd"] == pytest.approx(row["server_usd"]) and "0 tracebacks" in row["notes"]


def test_journal_writer_commit_returns_once_committed_and_raises_for_an_unstorable_row(tmp_path):
    """The awaitable form (for callers that must not use an answer before it is in the journal)."""
    from smartmix.domain import Completion, Message, Request
    from smartmix.journal import Journal
    from smartmix.journal_writer import BackgroundJournalWriter

    journal = Journal(tmp_path / "j.sqlite")
    journal.start_run("r", {}, 0)
    writer = BackgroundJournalWriter(journal, "r")
    request = Request("m", (Message("user", "x"),))

    class Unstorable:
        def __str__(self):
            raise ValueError("cannot be text")

        def __repr__(self):
            raise ValueError("cannot be text")

    async def go():
        await asyncio.gather(*(writer.commit(request, Completion("m", f"a{i}"), "run", 0.01) for i in range(20)))
        assert len(journal.calls("r")) == 20  # committed before the awaits returned
        with pytest.raises(ValueError):
            await writer.commit(request, Completion("m", Unstorable()), "run", 0.01)  # type: ignore[arg-type]

    asyncio.run(go())
    writer.close()
    assert writer.written == 20 and writer.failed == 1
    journal.close()
