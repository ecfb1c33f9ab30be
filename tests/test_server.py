"""The OpenAI-compatible server, tested with the real openai client against it, and a real upstream."""

from __future__ import annotations

import math
import threading
import time

import openai
import pytest
import uvicorn
from openai_server import run_server

from smartmix.config import parse_config
from smartmix.serve import create_app

KEY = "sk-client-secret-123"


class Served:
    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def upstream():
    with run_server() as srv:
        yield srv


def job(upstream_url: str, tmp_path, *, threshold: float = 0.5, max_attempts: int = 2) -> dict:
    limits = {"max_attempts": max_attempts, "max_concurrency": 256}
    return {
        "models": {
            "cheap": {"base_url": upstream_url, "input_price": 0.1, "output_price": 0.4, **limits},
            "big": {"base_url": upstream_url, "input_price": 5.0, "output_price": 15.0, "reference": True, **limits},
        },
        "routes": {"auto": {"type": "cascade", "chain": ["cheap"], "threshold": threshold}},
        "server": {"keys": [KEY], "journal": str(tmp_path / "server.sqlite")},
    }


@pytest.fixture
def smartmix_server(upstream, tmp_path, monkeypatch):
    upstream.control.reset()
    app = create_app(parse_config(job(upstream.base_url, tmp_path)))
    with Served(app) as served:
        yield served, upstream


def client(base_url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def test_fixed_route_returns_the_models_answer_with_cost(smartmix_server):
    served, upstream = smartmix_server
    upstream.control.set_answers(lambda model, prompt: f"{model}-says-hi")
    reply = client(served.base_url).chat.completions.with_raw_response.create(
        model="big", messages=[{"role": "user", "content": "hello"}]
    )
    body = reply.parse()
    assert body.choices[0].message.content == "big-says-hi"
    assert reply.headers["x-smartmix-model"] == "big"
    assert float(reply.headers["x-smartmix-cost-usd"]) > 0
    assert body.model_extra["smartmix"]["route"] == "big"


def test_cascade_keeps_confident_cheap_answers_and_escalates_the_rest(smartmix_server):
    served, upstream = smartmix_server
    upstream.control.set_answers(lambda model, prompt: "yes")
    upstream.control.set_top_logprobs("cheap", [("yes", math.log(0.95)), ("no", math.log(0.05))])
    sure = client(served.base_url).chat.completions.create(model="auto", messages=[{"role": "user", "content": "q1"}])
    assert sure.model_extra["smartmix"]["model"] == "cheap" and not sure.model_extra["smartmix"]["escalated"]
    upstream.control.set_top_logprobs("cheap", [("yes", math.log(0.5)), ("no", math.log(0.45))])
    unsure = client(served.base_url).chat.completions.create(model="auto", messages=[{"role": "user", "content": "q2"}])
    assert unsure.model_extra["smartmix"]["model"] == "big" and unsure.model_extra["smartmix"]["escalated"]


def test_streaming_passes_through(smartmix_server):
    served, upstream = smartmix_server
    upstream.control.set_answers(lambda model, prompt: "streamed answer")
    chunks = client(served.base_url).chat.completions.create(
        model="big", messages=[{"role": "user", "content": "s"}], stream=True
    )
    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    assert text == "streamed answer"


def test_completions_endpoint_and_models_list(smartmix_server):
    served, upstream = smartmix_server
    upstream.control.set_answers(lambda model, prompt: "ok")
    c = client(served.base_url)
    assert c.completions.create(model="cheap", prompt="p", max_tokens=1).choices[0].text == "ok"
    assert {m.id for m in c.models.list()} == {"cheap", "big", "auto"}


def test_wrong_key_unknown_route_and_upstream_down(smartmix_server, tmp_path):
    served, _ = smartmix_server
    with pytest.raises(openai.AuthenticationError):
        client(served.base_url, key="wrong").chat.completions.create(model="big", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError) as err:
        client(served.base_url).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "auto" in str(err.value) and "big" in str(err.value)
    dead = create_app(parse_config(job("http://127.0.0.1:9/v1", tmp_path / "d")))
    with Served(dead) as down:
        with pytest.raises(openai.APIStatusError) as err:
            client(down.base_url).chat.completions.create(model="big", messages=[{"role": "user", "content": "x"}])
        assert err.value.status_code == 502 and "failed after 2 attempts" in str(err.value)
        assert "connection failed" in str(err.value) and "Traceback" not in str(err.value)


def test_journal_has_costs_but_no_prompt_or_key(smartmix_server, tmp_path):
    served, upstream = smartmix_server
    upstream.control.set_answers(lambda model, prompt: "fine")
    secret_prompt = "my-very-private-prompt-text"
    client(served.base_url).chat.completions.create(model="big", messages=[{"role": "user", "content": secret_prompt}])
    served.server.should_exit = True
    time.sleep(0.5)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("server.sqlite*"))
    assert secret_prompt.encode() not in raw and KEY.encode() not in raw
    from smartmix.journal import Journal

    runs = Journal(tmp_path / "server.sqlite").runs()
    assert runs and runs[0].cost_usd > 0


# ------------------------------------------------------------------------------------------------------
# The fast proxy path: what it must keep doing


def stop(served: Served) -> None:
    served.server.should_exit = True
    served.thread.join(timeout=10)
    assert not served.thread.is_alive()


def journal_calls(path) -> tuple[list, list[dict]]:
    from smartmix.journal import Journal

    with Journal(path) as j:
        runs = j.runs()
        return runs, [c for r in runs for c in j.calls(r.run_id)]


def test_streaming_passes_through_chunk_by_chunk_and_is_charged(upstream, tmp_path):
    upstream.control.reset()
    upstream.control.set_answers(lambda model, prompt: "one two three four")
    served = Served(create_app(parse_config(job(upstream.base_url, tmp_path))))
    with served:
        c = client(served.base_url)
        raw = c.chat.completions.with_raw_response.create(
            model="big", messages=[{"role": "user", "content": "s"}], stream=True
        )
        assert raw.headers["x-smartmix-model"] == "big" and raw.headers["content-type"].startswith("text/event-stream")
        chunks = [ch for ch in raw.parse() if ch.choices]
        assert len(chunks) >= 4 and "".join(ch.choices[0].delta.content or "" for ch in chunks) == "one two three four"
        text = "".join(ch.choices[0].text for ch in c.completions.create(model="cheap", prompt="p", stream=True) if ch.choices)
        assert text == "one two three four"
        stop(served)
    runs, calls = journal_calls(tmp_path / "server.sqlite")
    assert runs[0].status == "stopped" and [c["model"] for c in calls] == ["big", "cheap"]
    assert all(c["cost_usd"] > 0 for c in calls)  # usage read from the stream's last chunk


def test_every_request_is_journaled_incl_the_shutdown_flush(upstream, tmp_path):
    import asyncio

    import httpx

    upstream.control.reset()
    upstream.control.set_answers(lambda model, prompt: "yes")
    upstream.control.set_top_logprobs("cheap", [("yes", math.log(0.5)), ("no", math.log(0.45))])  # escalates
    served = Served(create_app(parse_config(job(upstream.base_url, tmp_path))))
    n = 150

    async def burst(base_url: str) -> list[float]:
        async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as h:
            replies = await asyncio.gather(*(
                h.post("/chat/completions", json={"model": "big" if i % 2 else "auto",
                                                  "messages": [{"role": "user", "content": f"q{i}"}]})
                for i in range(n)
            ))
        assert all(r.status_code == 200 for r in replies)
        return [r.json()["smartmix"]["cost_usd"] for r in replies]

    with served:
        costs = asyncio.run(burst(served.base_url))
        stop(served)
    runs, calls = journal_calls(tmp_path / "server.sqlite")
    # "big": one call each; "auto": the cheap call that was not confident enough, then the reference
    assert len(calls) == n // 2 + 2 * (n // 2)
    assert sum(c["model"] == "cheap" for c in calls) == n // 2
    assert runs[0].status == "stopped" and runs[0].n_calls == len(calls)
    # what clients were told they paid (an escalated request: the cheap call too) is what the journal holds
    assert runs[0].cost_usd == pytest.approx(sum(costs))
    big_alone = min(costs[1::2])
    cheap_call = min(c["cost_usd"] for c in calls if c["model"] == "cheap")
    assert all(cost == pytest.approx(big_alone + cheap_call) for cost in costs[0::2])


def test_journal_writer_commits_everything_queued_on_close(tmp_path):
    from smartmix.domain import Completion, Message, Request
    from smartmix.journal import Journal
    from smartmix.journal_writer import BackgroundJournalWriter

    journal = Journal(tmp_path / "j.sqlite")
    journal.start_run("r", {}, 0)
    writer = BackgroundJournalWriter(journal, "r", max_batch=64)

    def call(i):
        return Request("m", (Message("user", f"id-{i}"),)), Completion("m", "answer"), "serve", 0.001

    with journal._lock:  # the database is busy: rows pile up in the queue, requests do not wait
        t0 = time.perf_counter()
        for i in range(1000):
            writer.record(*call(i))
        assert time.perf_counter() - t0 < 1.0
        assert writer.written < 1000
    writer.close()
    writer.record(*call("late"))  # after close: written at once
    assert writer.written == 1001 and writer.failed == 0
    calls = journal.calls("r")
    assert len(calls) == 1001 and sum(c["cost_usd"] for c in calls) == pytest.approx(1.001)
    journal.close()


def test_requests_do_not_wait_for_the_journal(smartmix_server):
    served, upstream = smartmix_server
    upstream.control.set_answers(lambda model, prompt: "quick")
    journal = served.server.config.app.state.journal_writer.journal
    with journal._lock:  # a slow disk: the journal is busy for as long as the request takes
        reply = client(served.base_url).with_options(timeout=5).chat.completions.create(
            model="big", messages=[{"role": "user", "content": "x"}]
        )
        assert reply.choices[0].message.content == "quick"


def test_upstream_errors_are_retried_then_answer_502_with_the_reason(smartmix_server):
    served, upstream = smartmix_server
    c = client(served.base_url)
    upstream.control.set_answers(lambda model, prompt: "fine")
    kinds = [("error", "HTTP 500"), ("garbage", "not a JSON object"), ("malformed", "not a JSON object"),
             ("drop", "connection failed"), ("no_choices", "no choices"), ("null_content", "content is null"),
             ("empty_content", "content is empty"), ("object_content", "content is dict, not text")]
    for kind, reason in kinds:
        upstream.control.add_fault(kind, count=1)  # one bad answer: retried, the client never sees it
        reply = c.chat.completions.create(model="big", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "fine", kind
        upstream.control.add_fault(kind, count=2)  # as many as max_attempts: a clear 502
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="big", messages=[{"role": "user", "content": "x"}])
        assert err.value.status_code == 502 and reason in str(err.value), (kind, str(err.value))
        assert "failed after 2 attempts" in str(err.value)
        paid = float(err.value.response.headers["x-smartmix-cost-usd"])  # billed garbage is reported too
        assert (paid > 0) == (kind in ("null_content", "empty_content", "object_content", "no_choices")), kind


def test_bad_request_bodies(smartmix_server):
    import httpx

    served, _ = smartmix_server
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(served.base_url + "/chat/completions", content=b"{nope", headers=headers)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
    r = httpx.post(served.base_url + "/chat/completions", content=b"[1, 2]", headers=headers)
    assert r.status_code == 400
    r = httpx.post(served.base_url + "/chat/completions", json={"model": "x"}, headers={"Authorization": "Bearer no"})
    assert r.status_code == 401
    assert httpx.get(served.base_url + "/models", headers={"Authorization": "Bearer no"}).status_code == 401


class _CountingUpstream:
    """A bare HTTP/1.1 keep-alive upstream (stdlib) that notes which client connection each request came on."""

    def __init__(self):
        import http.server
        import json

        seen = self.connections = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                seen.append(self.client_address)
                body = json.dumps({"id": "c", "object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_upstream_connections_are_kept_alive_and_reused(tmp_path):
    up = _CountingUpstream()
    try:
        with Served(create_app(parse_config(job(up.base_url, tmp_path)))) as served:
            c = client(served.base_url)
            for i in range(20):
                assert c.chat.completions.create(model="big", messages=[{"role": "user", "content": f"{i}"}]).choices
        assert len(up.connections) == 20 and len(set(up.connections)) == 1
    finally:
        up.httpd.shutdown()


def test_router_route_picks_per_prompt(upstream, tmp_path):
    import numpy as np

    from smartmix.router.embedding import HashingEmbedder
    from smartmix.router.predictor import AgreementPredictor

    prompts = [f"question {i} about {'physics' if i % 2 else 'history'} and more words" for i in range(80)]
    agree = {"cheap": np.array([i % 2 == 0 for i in range(80)], dtype=float), "big": np.ones(80)}
    path = AgreementPredictor(HashingEmbedder(), Cs=(1.0,)).fit(prompts, agree, "big").save(tmp_path / "r.npz")
    raw = job(upstream.base_url, tmp_path)
    raw["routes"]["smart"] = {"type": "router", "predictor": str(path), "theta": 0.5}
    upstream.control.reset()
    app = create_app(parse_config(raw))
    with Served(app) as served:
        c = client(served.base_url)
        for offload in (False, True):  # on the event loop (hashing features) or in a worker thread (MiniLM)
            app.state.routes["smart"].offload = offload
            for prompt, model in [("question 90 about history and more words", "cheap"),
                                  ("question 91 about physics and more words", "big")]:
                reply = c.chat.completions.create(model="smart", messages=[{"role": "user", "content": prompt}])
                assert reply.model_extra["smartmix"]["model"] == model


def test_cascade_answer_streams_as_one_chunk(smartmix_server):
    served, upstream = smartmix_server
    upstream.control.set_answers(lambda model, prompt: "yes")
    upstream.control.set_top_logprobs("cheap", [("yes", math.log(0.95)), ("no", math.log(0.05))])
    raw = client(served.base_url).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "q"}], stream=True
    )
    assert raw.headers["x-smartmix-model"] == "cheap" and float(raw.headers["x-smartmix-cost-usd"]) > 0
    chunks = list(raw.parse())
    assert len(chunks) == 1 and chunks[0].choices[0].delta.content == "yes"
    assert chunks[0].model_extra["smartmix"]["model"] == "cheap"
