"""The ASGI app (FastAPI with plain Starlette routes): /v1/chat/completions, /v1/completions, /v1/models.

The response is the answering model's own response body (streamed through when asked), with
``"smartmix": {"route", "model", "cost_usd", "escalated"}`` added to JSON bodies and ``x-smartmix-model`` /
``x-smartmix-cost-usd`` headers. ``cost_usd`` is everything the request paid (a cascade's cheap call
included). Clients authenticate with keys listed in the environment variable named by
``[server] keys_env`` (or ``[server] keys``); every paid call is journaled with its cost when
``[server] journal`` (or ``--journal``) names a journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from smartmix.backends.http import dumps
from smartmix.backends.openai_compat import MalformedResponse, check_forwarded
from smartmix.config import JobConfig, build_backend, build_pool
from smartmix.errors import ConfigError, ProviderError
from smartmix.serve.billing import Bill, ServedJournal
from smartmix.serve.cascade import keeps, logprob_params, score_of
from smartmix.serve.limits import BadRequest, max_body_bytes, parse_body, read_body, validate
from smartmix.serve.responses import as_sse, error_body, prompt_text, usage_in
from smartmix.serve.routes import Route, parse_routes, pick_by_router, warm_up

__all__ = ["SERVER_KEYS", "create_app"]

log = logging.getLogger("smartmix.serve")

SERVER_KEYS = {"keys", "keys_env", "journal", "max_body_bytes", "upstream_connections"}
DEFAULT_CONNECTIONS = 1024  # keep-alive connections to the upstreams, all models together
_PASSED_THROUGH = {400, 404, 413, 422}  # the provider's verdict on the client's own request


def create_app(config: JobConfig, *, reference: str | None = None, journal_path: str | None = None) -> Any:
    """The ASGI app. Everything per-route is worked out here, once: the pool, the routes (a router's
    predictor loaded and warmed up), the backends; per request the hot path reads and checks the body
    once (orjson), calls the model through its backend, writes the answer once, and queues the journal
    rows for a background writer."""
    from fastapi import FastAPI
    from starlette.requests import Request as HTTPRequest
    from starlette.responses import Response, StreamingResponse

    pool = build_pool(config, reference=reference)
    routes = parse_routes(config, pool)
    for route in routes.values():
        if route.kind == "router":
            warm_up(route, pool)
    server_cfg = config.extra.get("server", {})
    unknown = sorted(set(server_cfg) - SERVER_KEYS)
    if unknown:
        raise ConfigError(f"[server]: unknown key(s) {unknown}; allowed: {sorted(SERVER_KEYS)}")
    keys = [k.encode() for k in _client_keys(server_cfg)]
    body_limit = max_body_bytes(server_cfg)
    backends = build_backend(config).backends  # model name -> the backend a batch run would use
    connections = _connections(server_cfg)
    for backend in backends.values():
        transport = getattr(backend, "transport", None)
        if transport is not None:
            transport.connections = connections
    journal = served = writer = None
    run_id = f"server-{time.strftime('%Y%m%dT%H%M%S')}"
    if journal_path or server_cfg.get("journal"):
        from smartmix.journal import Journal
        from smartmix.journal_writer import BackgroundJournalWriter

        journal = Journal(journal_path or server_cfg["journal"])
        journal.start_run(run_id, {"server": True, "routes": sorted(routes)}, 0)
        writer = BackgroundJournalWriter(journal, run_id)
        served = ServedJournal(writer)
    route_list = ", ".join(sorted(routes))
    models_body = dumps({
        "object": "list",
        "data": [{"id": name, "object": "model", "owned_by": "smartmix", "route": r.kind} for name, r in routes.items()],
    })

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        for backend in backends.values():  # open the HTTP sessions now (imports included), not on the first request
            transport = getattr(backend, "transport", None)
            if transport is not None:
                transport.open()
        try:
            yield
        finally:
            try:
                for backend in {id(b): b for b in backends.values()}.values():
                    await backend.aclose()
            finally:
                if journal is not None:
                    writer.close()  # every queued row is committed before the run is closed
                    journal.finish_run(run_id, "stopped")
                    journal.close()

    app = FastAPI(title="smartmix", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def error(status: int, message: str, kind: str = "invalid_request_error", bill: Bill | None = None) -> Response:
        headers = {"x-smartmix-cost-usd": f"{bill.total:.10f}"} if bill is not None else None  # paid before failing
        return Response(error_body(status, message, kind), status_code=status, headers=headers,
                        media_type="application/json")

    def authorised(request: HTTPRequest) -> bool:
        if not keys:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip().encode()
        return any(hmac.compare_digest(given, k) for k in keys)

    async def models(request: HTTPRequest) -> Response:
        if not authorised(request):
            return error(401, "invalid API key for this smartmix server")
        return Response(models_body, media_type="application/json")

    async def handle(request: HTTPRequest, api: str) -> Response:
        if not authorised(request):
            return error(401, "invalid API key for this smartmix server")
        try:
            body = parse_body(await read_body(request.headers, request.stream(), body_limit))
            name = validate(body, api, route_list)
        except BadRequest as bad:
            return error(bad.status, str(bad))
        route = routes.get(name)
        if route is None:
            return error(404, f"unknown route '{name}'. Routes: {route_list}")
        bill = Bill(pool, served, route.name, api)
        try:
            return await serve_route(route, body, api, bill)
        except ProviderError as exc:
            status = getattr(exc, "status", None)
            if status in _PASSED_THROUGH:
                return error(status, str(exc), bill=bill)
            return error(502, str(exc), "upstream_error", bill)
        except Exception as exc:  # noqa: BLE001 - one line in the log, no traceback to the client
            log.error("smartmix serve: request on route %s failed: %s: %s", route.name, type(exc).__name__, exc)
            return error(500, f"internal error ({type(exc).__name__}); the request may be retried", "server_error", bill)

    def forward(model: str, body: dict, api: str, bill: Bill) -> Any:
        def paid(m: str, answer: dict | None) -> None:
            bill.charge(m, answer, usable=_usable(answer, api))

        return backends[model].forward(model, body, api, on_paid=paid)

    async def serve_route(route: Route, body: dict, api: str, bill: Bill) -> Response:
        stream = bool(body.get("stream"))
        escalated = False
        if route.kind == "model":
            model = route.model
        elif route.kind == "router":
            model = await router_pick(route, body, api)
        else:
            for model in route.chain:
                try:
                    response = await forward(model, logprob_params(body, api), api, bill)
                except ProviderError as exc:  # a failed cheap model has no score: escalate, like NaN
                    log.warning("smartmix serve: cascade %s: %s failed, escalating: %s", route.name, model, exc)
                else:
                    if keeps(score_of(response, api), route.threshold):
                        return finish(route, model, response, escalated, stream, bill)
                escalated = True
            model = pool.reference.name
        if stream:
            return await stream_through(route, model, body, api, escalated, bill)
        response = await forward(model, dict(body, stream=False) if "stream" in body else body, api, bill)
        return finish(route, model, response, escalated, False, bill)

    async def router_pick(route: Route, body: dict, api: str) -> str:
        prompt = prompt_text(body, api)
        if route.offload:  # a neural embedder takes milliseconds: keep the event loop free meanwhile
            return await asyncio.to_thread(pick_by_router, route, pool, prompt)
        return pick_by_router(route, pool, prompt)

    def finish(route: Route, model: str, response: dict, escalated: bool, stream: bool, bill: Bill) -> Response:
        cost = bill.total
        response["smartmix"] = {"route": route.name, "model": model, "cost_usd": cost, "escalated": escalated}
        headers = {"x-smartmix-model": model, "x-smartmix-cost-usd": f"{cost:.10f}"}
        if stream:
            return StreamingResponse(as_sse(response, bill.api), media_type="text/event-stream", headers=headers)
        return Response(dumps(response), headers=headers, media_type="application/json")

    async def stream_through(route: Route, model: str, body: dict, api: str, escalated: bool, bill: Bill) -> Response:
        streamed = dict(body, stream_options={"include_usage": True})  # the last chunk then carries usage
        upstream = await backends[model].open_stream(model, streamed, api)

        async def relay() -> AsyncIterator[bytes]:
            tail = b""
            usage: dict = {}
            try:
                async for chunk in upstream.chunks():
                    yield chunk
                    tail = (tail + chunk)[-8192:]
                    if b'"usage"' in tail:
                        usage = usage_in(tail) or usage
            except Exception as exc:  # noqa: BLE001 - the upstream dropped mid-stream: end it, one log line
                log.warning("smartmix serve: stream from %s broke off: %s: %s", model, type(exc).__name__, exc)
            finally:
                upstream.close()
                bill.charge(model, {"usage": usage})

        headers = {
            "x-smartmix-model": model, "x-smartmix-route": route.name, "x-smartmix-escalated": str(escalated).lower(),
        }
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
    app.state.backends = backends
    app.state.journal_writer = writer
    return app


def _usable(answer: dict | None, api: str) -> bool:
    try:
        check_forwarded(answer, api)
    except MalformedResponse:
        return False
    return True


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
