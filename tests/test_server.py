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
from smartmix.server import create_app

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


def job(upstream_url: str, tmp_path, *, threshold: float = 0.5) -> dict:
    return {
        "models": {
            "cheap": {"base_url": upstream_url, "input_price": 0.1, "output_price": 0.4},
            "big": {"base_url": upstream_url, "input_price": 5.0, "output_price": 15.0, "reference": True},
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
        assert err.value.status_code == 502 and "unreachable" in str(err.value)


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
