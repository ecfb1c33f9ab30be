"""``smartmix serve``: an OpenAI-compatible endpoint that routes each request to the cheapest model that will do.

Clients change only their base URL. The request's ``model`` names a *route* from the job file:

- ``type = "model"``: a fixed model (every model of the pool is also a route of its own name);
- ``type = "cascade"``: the chain's models are asked in order with first-token logprobs; the first answer
  whose confidence score (1 − p₂/p₁ of the first token) reaches ``threshold`` is returned, else the
  reference answers;
- ``type = "router"``: a trained agreement predictor (``smartmix router train``) picks, without calling
  anything, the cheapest model whose predicted agreement with the reference is at least ``theta``, or the
  best predicted agreement within ``budget`` USD per request on average.

The response is the answering model's own response body (streamed through when asked), with
``"smartmix": {"route", "model", "cost_usd", "escalated"}`` added to JSON bodies and ``x-smartmix-model`` /
``x-smartmix-cost-usd`` headers on every response. Clients authenticate with keys listed in the
environment variable named by ``[server] keys_env``; every request is journaled with its cost — the prompt
only as a hash, keys never.
"""


import contextlib
import hashlib
import hmac
import json
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from smartmix.backends.base import Completion, Message, Request
from smartmix.config import JobConfig, build_pool
from smartmix.errors import ConfigError
from smartmix.models import Pool
from smartmix.scores import confidence_score

ENDPOINTS = {"chat": "/chat/completions", "completions": "/completions"}


@dataclass
class Route:
    name: str
    kind: str  # model | cascade | router
    model: str | None = None
    chain: list[str] = field(default_factory=list)
    threshold: float = 0.9
    predictor: Any = None
    theta: float | None = None
    lam: float | None = None


def parse_routes(config: JobConfig, pool: Pool) -> dict[str, Route]:
    routes = {name: Route(name, "model", model=name) for name in config.models}
    for name, raw in config.extra.get("routes", {}).items():
        kind = raw.get("type", "model")
        if kind == "model":
            model = raw.get("model", name)
            pool.spec(model)
            routes[name] = Route(name, "model", model=model)
        elif kind == "cascade":
            chain = list(raw.get("chain") or [])
            for m in chain:
                pool.spec(m)
            if not chain:
                raise ConfigError(f"[routes.{name}]: a cascade needs chain = [\"cheap-model\", ...]")
            routes[name] = Route(name, "cascade", chain=chain, threshold=float(raw.get("threshold", 0.9)))
        elif kind == "router":
            routes[name] = _router_route(name, raw, pool)
        else:
            raise ConfigError(f"[routes.{name}]: type must be 'model', 'cascade' or 'router', not '{kind}'")
    return routes


def _router_route(name: str, raw: dict, pool: Pool) -> Route:
    from smartmix.router.predictor import AgreementPredictor

    path = raw.get("predictor")
    if not path:
        raise ConfigError(f"[routes.{name}]: a router needs predictor = \"router.npz\" (smartmix router train)")
    predictor = AgreementPredictor.load(path)
    route = Route(name, "router", predictor=predictor)
    if "theta" in raw:
        route.theta = float(raw["theta"])
    elif "budget" in raw:
        route.lam = float(raw.get("lambda", math.nan))
        if math.isnan(route.lam):
            raise ConfigError(
                f"[routes.{name}]: a budget route needs the lambda tuned for it: smartmix router tune prints it"
            )
    else:
        raise ConfigError(f"[routes.{name}]: a router needs theta = 0.8 or budget + lambda")
    for m in predictor.models:
        pool.spec(m)
    return route


class Upstreams:
    """HTTP to the pool's real endpoints, one pooled client for all."""

    def __init__(self, config: JobConfig):
        import httpx

        self.config = config
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(120.0, connect=10.0),
            limits=httpx.Limits(max_connections=2048, max_keepalive_connections=1024),
        )
        self.keys: dict[str, str] = {}
        for name, m in config.models.items():
            if m.api_key_env:
                key = os.environ.get(m.api_key_env)
                if not key:
                    raise ConfigError(f"model {name}: the environment variable {m.api_key_env} (its API key) is not set")
                self.keys[name] = key

    def url(self, model: str, api: str) -> str:
        base = self.config.models[model].base_url or "https://api.openai.com/v1"
        return base.rstrip("/") + ENDPOINTS[api]

    def headers(self, model: str) -> dict[str, str]:
        key = self.keys.get(model)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def body(self, model: str, body: dict) -> dict:
        m = self.config.models[model]
        return dict(body, model=m.provider_model or model)

    async def aclose(self) -> None:
        await self.client.aclose()


class UpstreamDown(Exception):
    pass


def create_app(config: JobConfig, *, reference: str | None = None, journal_path: str | None = None):
    from fastapi import FastAPI
    from fastapi import Request as HTTPRequest
    from fastapi.responses import JSONResponse, StreamingResponse

    pool = build_pool(config, reference=reference)
    routes = parse_routes(config, pool)
    server_cfg = config.extra.get("server", {})
    keys = _client_keys(server_cfg)
    upstreams = Upstreams(config)
    journal = None
    run_id = f"server-{time.strftime('%Y%m%dT%H%M%S')}"
    if journal_path or server_cfg.get("journal"):
        from smartmix.journal import Journal

        journal = Journal(journal_path or server_cfg["journal"])
        journal.start_run(run_id, {"server": True, "routes": sorted(routes)}, 0)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await upstreams.aclose()
        if journal is not None:
            journal.finish_run(run_id, "stopped")
            journal.close()

    app = FastAPI(title="smartmix", docs_url=None, redoc_url=None, lifespan=lifespan)

    def error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    def authorised(request: HTTPRequest) -> bool:
        if not keys:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)

    @app.get("/v1/models")
    async def models(request: HTTPRequest):
        if not authorised(request):
            return error(401, "invalid API key for this smartmix server", "invalid_request_error")
        data = [{"id": name, "object": "model", "owned_by": "smartmix", "route": r.kind} for name, r in routes.items()]
        return {"object": "list", "data": data}

    async def handle(request: HTTPRequest, api: str):
        if not authorised(request):
            return error(401, "invalid API key for this smartmix server", "invalid_request_error")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not JSON", "invalid_request_error")
        name = body.get("model")
        route = routes.get(name)
        if route is None:
            return error(
                404, f"unknown route '{name}'. Routes: {', '.join(sorted(routes))}", "invalid_request_error"
            )
        try:
            return await serve_route(route, body, api)
        except UpstreamDown as exc:
            return error(502, str(exc), "upstream_error")

    async def serve_route(route: Route, body: dict, api: str):
        stream = bool(body.get("stream"))
        escalated = False
        if route.kind == "model":
            model = route.model
        elif route.kind == "router":
            model = pick_by_router(route, body, api)
        else:
            for model in route.chain:
                response = await call(model, dict(body, stream=False, logprobs=True, top_logprobs=5) if api == "chat" else dict(body, stream=False, logprobs=5), api)
                if score_of(response, api) >= route.threshold:
                    return finish(route, model, response, escalated, stream, api)
                charge(model, response, api)
                escalated = True
            model = pool.reference.name
        if stream:
            return await stream_through(route, model, body, api, escalated)
        response = await call(model, dict(body, stream=False), api)
        return finish(route, model, response, escalated, False, api)

    def pick_by_router(route: Route, body: dict, api: str) -> str:
        from smartmix.router.selector import select_budget, select_threshold

        prompt = prompt_text(body, api)
        pred = route.predictor.predict([prompt])
        costs = {m: typical_cost(m, prompt) for m in pred}
        if route.theta is not None:
            return str(select_threshold(pred, costs, route.theta, reference=pool.reference.name)[0])
        return str(select_budget(pred, costs, lam=route.lam, reference=pool.reference.name)[0])

    def typical_cost(model: str, prompt: str) -> float:
        from smartmix.models import estimate_tokens

        return pool.spec(model).cost(estimate_tokens(prompt), 16)

    async def call(model: str, body: dict, api: str) -> dict:
        import httpx

        try:
            r = await upstreams.client.post(upstreams.url(model, api), json=upstreams.body(model, body), headers=upstreams.headers(model))
        except httpx.HTTPError as exc:
            raise UpstreamDown(
                f"upstream for model '{model}' is unreachable ({type(exc).__name__}); check its base_url and that it is running"
            ) from None
        if r.status_code >= 400:
            raise UpstreamDown(f"upstream for model '{model}' answered HTTP {r.status_code}")
        try:
            return r.json()
        except ValueError:
            raise UpstreamDown(f"upstream for model '{model}' answered something that is not JSON") from None

    def cost_of(model: str, response: dict) -> float:
        usage = response.get("usage") or {}
        try:
            return pool.spec(model).cost(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        except Exception:
            return 0.0

    def charge(model: str, response: dict, api: str) -> float:
        cost = cost_of(model, response)
        if journal is not None:
            text = answer_text(response, api)
            digest = hashlib.sha256(json.dumps(response.get("id", ""), default=str).encode()).hexdigest()
            request = Request(model=model, messages=(Message("user", digest),), item_id=None)
            journal.record(run_id, request, Completion(model=model, text=text), phase="serve", cost_usd=cost)
        return cost

    def finish(route: Route, model: str, response: dict, escalated: bool, stream: bool, api: str):
        cost = charge(model, response, api)
        response["smartmix"] = {"route": route.name, "model": model, "cost_usd": cost, "escalated": escalated}
        headers = {"x-smartmix-model": model, "x-smartmix-cost-usd": f"{cost:.10f}"}
        if stream:
            return StreamingResponse(_as_sse(response, api), media_type="text/event-stream", headers=headers)
        return JSONResponse(response, headers=headers)

    async def stream_through(route: Route, model: str, body: dict, api: str, escalated: bool):
        import httpx

        streamed = dict(body, stream_options={"include_usage": True})  # the last chunk then carries usage
        request = upstreams.client.build_request(
            "POST", upstreams.url(model, api), json=upstreams.body(model, streamed), headers=upstreams.headers(model)
        )
        try:
            upstream = await upstreams.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamDown(f"upstream for model '{model}' is unreachable ({type(exc).__name__})") from None

        async def relay() -> AsyncIterator[bytes]:
            tail = b""
            usage: dict = {}
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
                    tail = (tail + chunk)[-8192:]
                    usage = _usage_in(tail) or usage
            finally:
                await upstream.aclose()
                charge(model, {"usage": usage}, api)

        headers = {"x-smartmix-model": model, "x-smartmix-route": route.name, "x-smartmix-escalated": str(escalated).lower()}
        return StreamingResponse(relay(), status_code=upstream.status_code, media_type="text/event-stream", headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: HTTPRequest):
        return await handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: HTTPRequest):
        return await handle(request, "completions")

    app.state.routes = routes
    return app


def _client_keys(server_cfg: dict) -> list[str]:
    env = server_cfg.get("keys_env")
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"[server] keys_env = '{env}', but that environment variable is not set")
        return [k.strip() for k in value.split(",") if k.strip()]
    return list(server_cfg.get("keys", []))


def prompt_text(body: dict, api: str) -> str:
    if api == "chat":
        return "\n\n".join(str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict))
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else "\n\n".join(map(str, prompt))


def answer_text(response: dict, api: str) -> str:
    try:
        choice = response["choices"][0]
        return choice["message"]["content"] if api == "chat" else choice["text"]
    except (KeyError, IndexError, TypeError):
        return ""


def score_of(response: dict, api: str) -> float:
    from smartmix.backends.openai_compat import _chat_top_logprobs, _completions_top_logprobs

    try:
        choice = response["choices"][0]
    except (KeyError, IndexError, TypeError):
        return -math.inf
    top = _chat_top_logprobs(choice, 5) if api == "chat" else _completions_top_logprobs(choice, 5)
    score = confidence_score(Completion(model="", text="", top_logprobs=top))
    return -math.inf if math.isnan(score) else score


def _usage_in(tail: bytes) -> dict | None:
    """The usage object of the last complete SSE event that has one, if any."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            try:
                usage = json.loads(line[6:]).get("usage")
            except ValueError:
                continue
            if usage:
                return usage
    return None


async def _as_sse(response: dict, api: str) -> AsyncIterator[bytes]:
    """A complete response replayed as one streamed chunk (the cascade decided before answering)."""
    chunk = dict(response)
    if api == "chat":
        chunk["object"] = "chat.completion.chunk"
        chunk["choices"] = [
            {"index": 0, "delta": {"role": "assistant", "content": answer_text(response, api)},
             "finish_reason": (response.get("choices") or [{}])[0].get("finish_reason", "stop")}
        ]
    yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"
