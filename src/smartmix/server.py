"""``smartmix serve``: an OpenAI-compatible endpoint that routes each request to the cheapest model that will do.

Clients change only their base URL. The request's ``model`` names a *route* from the job file:

- ``type = "model"``: a fixed model (every model of the pool is also a route of its own name);
- ``type = "cascade"``: the chain's models are asked in order with first-token logprobs; the first answer
  whose score (1 − p₂/p₁ of the first token) is above ``threshold`` (the batch chain rule,
  :func:`smartmix.core.chain.keeps`) is returned, else the reference answers;
- ``type = "router"``: a trained agreement predictor (``smartmix router train``) picks, without calling
  anything, the cheapest model whose predicted agreement with the reference is at least ``theta``, or the
  best predicted agreement within ``budget`` USD per request on average.

The response is the answering model's own response body (streamed through when asked), with
``"smartmix": {"route", "model", "cost_usd", "escalated"}`` added to JSON bodies and ``x-smartmix-model`` /
``x-smartmix-cost-usd`` headers on every response. Clients authenticate with keys listed in the
environment variable named by ``[server] keys_env``; every request is journaled with its cost — the prompt
only as a hash, keys never.
"""


import asyncio
import contextlib
import hmac
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from smartmix.config import JobConfig, build_pool
from smartmix.core.chain import keeps
from smartmix.domain import Completion
from smartmix.errors import ConfigError
from smartmix.models import Pool
from smartmix.scores import confidence_score
from smartmix.upstream import DEFAULT_CONNECTIONS, ENDPOINTS, UpstreamDown, Upstreams, dumps, loads

__all__ = ["ENDPOINTS", "Route", "UpstreamDown", "Upstreams", "create_app", "parse_routes"]


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
    offload: bool = False  # run the predictor in a worker thread (a neural embedder), not on the event loop


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


def create_app(config: JobConfig, *, reference: str | None = None, journal_path: str | None = None):
    """The ASGI app (FastAPI). Everything per-route is worked out here, once: the pool, the routes (a
    router's predictor loaded and warmed up), the upstream URLs and headers; per request the hot path
    parses the body once (orjson), makes one upstream call on a shared keep-alive session (aiohttp),
    writes the answer once, and queues the journal row for a background writer."""
    from fastapi import FastAPI
    from starlette.requests import Request as HTTPRequest
    from starlette.responses import Response, StreamingResponse

    pool = build_pool(config, reference=reference)
    routes = parse_routes(config, pool)
    for route in routes.values():
        if route.kind == "router":
            _warm_up(route, pool)
    server_cfg = config.extra.get("server", {})
    keys = [k.encode() for k in _client_keys(server_cfg)]
    upstreams = Upstreams(config, connections=_connections(server_cfg))
    journal = writer = None
    run_id = f"server-{time.strftime('%Y%m%dT%H%M%S')}"
    if journal_path or server_cfg.get("journal"):
        from smartmix.journal import Journal
        from smartmix.server_journal import JournalWriter

        journal = Journal(journal_path or server_cfg["journal"])
        journal.start_run(run_id, {"server": True, "routes": sorted(routes)}, 0)
        writer = JournalWriter(journal, run_id)
    route_list = ", ".join(sorted(routes))
    models_body = dumps({
        "object": "list",
        "data": [{"id": name, "object": "model", "owned_by": "smartmix", "route": r.kind} for name, r in routes.items()],
    })

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await upstreams.start()
        try:
            yield
        finally:
            try:
                await upstreams.aclose()
            finally:
                if journal is not None:
                    writer.close()  # every queued row is committed before the run is closed
                    journal.finish_run(run_id, "stopped")
                    journal.close()

    app = FastAPI(title="smartmix", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(dumps(content), status_code=status, headers=headers, media_type="application/json")

    def error(status: int, message: str, kind: str) -> Response:
        return json_response({"error": {"message": message, "type": kind, "code": status}}, status)

    def authorised(request: HTTPRequest) -> bool:
        if not keys:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip().encode()
        return any(hmac.compare_digest(given, k) for k in keys)

    async def models(request: HTTPRequest) -> Response:
        if not authorised(request):
            return error(401, "invalid API key for this smartmix server", "invalid_request_error")
        return Response(models_body, media_type="application/json")

    async def handle(request: HTTPRequest, api: str) -> Response:
        if not authorised(request):
            return error(401, "invalid API key for this smartmix server", "invalid_request_error")
        try:
            body = loads(await request.body())
        except ValueError:
            return error(400, "the request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return error(400, "the request body is not a JSON object", "invalid_request_error")
        name = body.get("model")
        route = routes.get(name) if isinstance(name, str) else None
        if route is None:
            return error(404, f"unknown route '{name}'. Routes: {route_list}", "invalid_request_error")
        try:
            return await serve_route(route, body, api)
        except UpstreamDown as exc:
            return error(502, str(exc), "upstream_error")

    async def serve_route(route: Route, body: dict, api: str) -> Response:
        stream = bool(body.get("stream"))
        escalated = False
        if route.kind == "model":
            model = route.model
        elif route.kind == "router":
            model = await pick_by_router(route, body, api)
        else:
            for model in route.chain:
                asked = dict(body, stream=False, logprobs=True, top_logprobs=5) if api == "chat" else dict(body, stream=False, logprobs=5)
                response = await upstreams.post_json(model, asked, api)
                if keeps(score_of(response, api), route.threshold):
                    return finish(route, model, response, escalated, stream, api)
                charge(model, response, api)
                escalated = True
            model = pool.reference.name
        if stream:
            return await stream_through(route, model, body, api, escalated)
        response = await upstreams.post_json(model, dict(body, stream=False), api)
        return finish(route, model, response, escalated, False, api)

    async def pick_by_router(route: Route, body: dict, api: str) -> str:
        prompt = prompt_text(body, api)
        if route.offload:  # a neural embedder takes milliseconds: keep the event loop free meanwhile
            return await asyncio.to_thread(_router_pick, route, pool, prompt)
        return _router_pick(route, pool, prompt)

    def cost_of(model: str, response: dict) -> float:
        usage = response.get("usage") or {}
        try:
            return pool.spec(model).cost(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        except Exception:
            return 0.0

    def charge(model: str, response: dict, api: str) -> float:
        cost = cost_of(model, response)
        if writer is not None:
            writer.record(model, response.get("id", ""), answer_text(response, api), cost)
        return cost

    def finish(route: Route, model: str, response: dict, escalated: bool, stream: bool, api: str) -> Response:
        cost = charge(model, response, api)
        response["smartmix"] = {"route": route.name, "model": model, "cost_usd": cost, "escalated": escalated}
        headers = {"x-smartmix-model": model, "x-smartmix-cost-usd": f"{cost:.10f}"}
        if stream:
            return StreamingResponse(_as_sse(response, api), media_type="text/event-stream", headers=headers)
        return json_response(response, headers=headers)

    async def stream_through(route: Route, model: str, body: dict, api: str, escalated: bool) -> Response:
        streamed = dict(body, stream_options={"include_usage": True})  # the last chunk then carries usage
        upstream = await upstreams.open_stream(model, streamed, api)

        async def relay() -> AsyncIterator[bytes]:
            tail = b""
            usage: dict = {}
            try:
                async for chunk in upstream.chunks():
                    yield chunk
                    tail = (tail + chunk)[-8192:]
                    if b'"usage"' in tail:
                        usage = _usage_in(tail) or usage
            finally:
                upstream.close()
                charge(model, {"usage": usage}, api)

        headers = {"x-smartmix-model": model, "x-smartmix-route": route.name, "x-smartmix-escalated": str(escalated).lower()}
        return StreamingResponse(relay(), status_code=upstream.status, media_type="text/event-stream", headers=headers)

    async def chat(request: HTTPRequest) -> Response:
        return await handle(request, "chat")

    async def completions(request: HTTPRequest) -> Response:
        return await handle(request, "completions")

    # Plain (Starlette) routes: the handlers take the raw request, so FastAPI has no parameters to solve
    # or validate and no response model to serialise; the body is parsed once, by orjson.
    app.add_route("/v1/chat/completions", chat, methods=["POST"])
    app.add_route("/v1/completions", completions, methods=["POST"])
    app.add_route("/v1/models", models, methods=["GET"])

    app.state.routes = routes
    app.state.upstreams = upstreams
    app.state.journal_writer = writer
    return app


def _router_pick(route: Route, pool: Pool, prompt: str) -> str:
    from smartmix.models import estimate_tokens
    from smartmix.router.selector import select_budget, select_threshold

    pred = route.predictor.predict([prompt])
    n_in = estimate_tokens(prompt)
    costs = {m: pool.spec(m).cost(n_in, 16) for m in pred}
    if route.theta is not None:
        return str(select_threshold(pred, costs, route.theta, reference=pool.reference.name)[0])
    return str(select_budget(pred, costs, lam=route.lam, reference=pool.reference.name)[0])


def _warm_up(route: Route, pool: Pool) -> None:
    """Load the router's embedder and its imports now, at startup, not on the first request."""
    from smartmix.router.embedding import HashingEmbedder

    route.offload = not isinstance(route.predictor.embedder, HashingEmbedder)
    _router_pick(route, pool, "warm-up")


def _connections(server_cfg: dict) -> int:
    value = server_cfg.get("upstream_connections", DEFAULT_CONNECTIONS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"[server] upstream_connections must be a whole number >= 1, not {value!r}")
    return value


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
    from smartmix.backends.openai_compat import chat_top_logprobs, completions_top_logprobs

    try:
        choice = response["choices"][0]
    except (KeyError, IndexError, TypeError):
        return -math.inf
    top = chat_top_logprobs(choice, 5) if api == "chat" else completions_top_logprobs(choice, 5)
    score = confidence_score(Completion(model="", text="", top_logprobs=top))
    return -math.inf if math.isnan(score) else score


def _usage_in(tail: bytes) -> dict | None:
    """The usage object of the last complete SSE event that has one, if any."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            try:
                usage = loads(line[6:]).get("usage")
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
    yield b"data: " + dumps(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"
