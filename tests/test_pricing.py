"""Each call is priced from its real usage by genai-prices (tiers, cached input tokens); given prices win."""

from __future__ import annotations

import json
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from genai_prices import Usage, calc_price

from smartmix.config import build_pool, parse_config
from smartmix.models import Pool, lookup_price


def listed(model: str, input_tokens: int, output_tokens: int, cached: int = 0) -> float:
    usage = Usage(input_tokens=input_tokens, cache_read_tokens=cached, output_tokens=output_tokens)
    return float(calc_price(usage, model).total_price)


def test_a_tiered_price_applies_past_its_threshold():
    spec = Pool.build(["gemini-1.5-pro"], "gemini-1.5-pro").spec("gemini-1.5-pro")
    assert spec.price_source == "genai-prices" and spec.price_ref == "gemini-1.5-pro"
    short, long = spec.cost(1_000, 100), spec.cost(300_000, 100)
    assert short == pytest.approx(listed("gemini-1.5-pro", 1_000, 100), rel=1e-12)
    assert long == pytest.approx(listed("gemini-1.5-pro", 300_000, 100), rel=1e-12)
    base_in, base_out = lookup_price("gemini-1.5-pro")
    assert long > 300_000 * base_in + 100 * base_out * 1.5  # the flat base rate would under-bill it


def test_cached_input_tokens_are_billed_at_the_cache_read_price():
    spec = Pool.build(["gpt-4o"], "gpt-4o").spec("gpt-4o")
    full, cached = spec.cost(1_000, 100), spec.cost(1_000, 100, cached_tokens=800)
    assert cached == pytest.approx(listed("gpt-4o", 1_000, 100, cached=800), rel=1e-12)
    assert cached < full == pytest.approx(listed("gpt-4o", 1_000, 100), rel=1e-12)


def test_given_prices_override_genai_prices():
    config = parse_config(tomllib.loads('[models.gpt-4o]\ninput_price = 1.0\noutput_price = 2.0\n'))
    spec = build_pool(config, reference="gpt-4o").spec("gpt-4o")
    assert spec.price_source == "given" and spec.price_ref is None
    assert spec.cost(300_000, 100, cached_tokens=800) == pytest.approx(300_000 * 1e-6 + 100 * 2e-6)


def test_the_config_looks_the_price_up_by_the_provider_model():
    config = parse_config(tomllib.loads('[models.mine]\nprovider_model = "gpt-4o-mini"\n'))
    spec = build_pool(config, reference="mine").spec("mine")
    assert spec.price_ref == "gpt-4o-mini"
    assert spec.cost(2_000, 50, 1_024) == pytest.approx(listed("gpt-4o-mini", 2_000, 50, cached=1_024), rel=1e-12)


class _Provider(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that reports a prompt-cache hit in its usage."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({
            "id": "x", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2_000, "completion_tokens": 3, "total_tokens": 2_003,
                      "prompt_tokens_details": {"cached_tokens": 1_536}},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def provider():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_run_bills_what_genai_prices_says_for_the_reported_usage(provider, tmp_path):
    import smartmix.api
    from smartmix.api import config_job

    items = tmp_path / "items.csv"
    items.write_text("id,text\na,one\nb,two\nc,three\n")
    config = parse_config(tomllib.loads(
        f'reference = "gpt-4o"\n[models.gpt-4o]\nbase_url = "{provider}"\nmax_attempts = 1\n'
        '[task]\ntemplate = "{text}"\nmax_tokens = 4\n'
    ))
    result = smartmix.api.run(job=config_job(config, items), method="reference", seed=0)
    assert len(result.items) == 3
    assert result.total_cost == pytest.approx(3 * listed("gpt-4o", 2_000, 3, cached=1_536), rel=1e-9)
    assert result.total_cost < 3 * listed("gpt-4o", 2_000, 3)
