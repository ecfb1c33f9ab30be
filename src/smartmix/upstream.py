"""HTTP to the pool's real OpenAI-compatible endpoints for ``smartmix serve``: one long-lived aiohttp
session (keep-alive connection pool shared by every request), bodies (de)serialised with orjson.

The session belongs to the server's event loop: it is opened on the server's startup (or on the first
call) and closed on shutdown. URLs and headers are worked out once per model, not per request.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from smartmix import defaults
from smartmix.config import JobConfig
from smartmix.errors import ConfigError

ENDPOINTS = {"chat": "/chat/completions", "completions": "/completions"}

# Keep-alive connections to the upstreams, all models together. A proxy with many concurrent clients
# needs about one connection per request in flight; beyond the limit, requests wait for a free one.
DEFAULT_CONNECTIONS = defaults.UPSTREAM_CONNECTIONS


class UpstreamDown(Exception):
    """The upstream could not be reached, or answered an error or something that is not JSON."""


def dumps(value: Any) -> bytes:
    """JSON bytes of ``value`` (orjson; the standard library for what orjson refuses, e.g. huge ints)."""
    import orjson

    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def loads(data: bytes | str) -> Any:
    """Parsed JSON (orjson; the standard library for what orjson refuses, e.g. NaN). ValueError if not JSON."""
    import orjson

    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # raises ValueError (JSONDecodeError) when it is not JSON at all


@dataclass(frozen=True)
class _Target:
    urls: dict[str, str]
    headers: dict[str, str]
    provider_model: str


class UpstreamStream:
    """An upstream response being streamed: ``status``, the body chunk by chunk, then :meth:`close`."""

    def __init__(self, response: Any):
        self._response = response
        self.status: int = response.status

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk

    def close(self) -> None:
        # release() returns a fully read connection to the pool; an interrupted one is closed instead
        self._response.release()


class Upstreams:
    """HTTP to the pool's real endpoints, one pooled keep-alive session for all."""

    def __init__(self, config: JobConfig, *, connections: int = DEFAULT_CONNECTIONS):
        self.config = config
        self.connections = connections
        self.keys: dict[str, str] = {}
        for name, m in config.models.items():
            if m.api_key_env:
                key = os.environ.get(m.api_key_env)
                if not key:
                    raise ConfigError(f"model {name}: the environment variable {m.api_key_env} (its API key) is not set")
                self.keys[name] = key
        self._targets: dict[str, _Target] = {}
        for name, m in config.models.items():
            base = (m.base_url or defaults.BASE_URL).rstrip("/")
            headers = {"Content-Type": "application/json"}
            if name in self.keys:
                headers["Authorization"] = f"Bearer {self.keys[name]}"
            urls = {api: base + path for api, path in ENDPOINTS.items()}
            self._targets[name] = _Target(urls, headers, m.provider_model or name)
        self._session: Any = None

    # -- what is sent where ---------------------------------------------------------------------------

    def url(self, model: str, api: str) -> str:
        return self._targets[model].urls[api]

    def headers(self, model: str) -> dict[str, str]:
        return self._targets[model].headers

    def body(self, model: str, body: dict) -> dict:
        return dict(body, model=self._targets[model].provider_model)

    # -- the session ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session on the running event loop (done by the first call if not before)."""
        if self._session is None or self._session.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=self.connections, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # connect: waiting for a pooled connection plus opening one; sock_read: between two reads
                timeout=aiohttp.ClientTimeout(total=None, connect=120.0, sock_connect=10.0, sock_read=120.0),
                cookie_jar=aiohttp.DummyCookieJar(),  # a proxy must not carry cookies from one client to the next
                raise_for_status=False,
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _errors(self) -> tuple[type[BaseException], ...]:
        import aiohttp

        return (aiohttp.ClientError, asyncio.TimeoutError, OSError)

    # -- calls ----------------------------------------------------------------------------------------

    async def post_json(self, model: str, body: dict, api: str) -> dict:
        """POST ``body`` (with the model's provider name) and return the parsed JSON answer.

        Raises :class:`UpstreamDown` when the upstream is unreachable, answers HTTP >= 400, or not JSON.
        """
        if self._session is None:
            await self.start()
        target = self._targets[model]
        data = dumps(dict(body, model=target.provider_model))
        try:
            async with self._session.post(target.urls[api], data=data, headers=target.headers) as r:
                status = r.status
                raw = await r.read()
        except self._errors() as exc:
            raise UpstreamDown(
                f"upstream for model '{model}' is unreachable ({type(exc).__name__}); check its base_url and that it is running"
            ) from None
        if status >= 400:
            raise UpstreamDown(f"upstream for model '{model}' answered HTTP {status}")
        try:
            answer = loads(raw)
        except ValueError:
            raise UpstreamDown(f"upstream for model '{model}' answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise UpstreamDown(f"upstream for model '{model}' answered JSON that is not an object")
        return answer

    async def open_stream(self, model: str, body: dict, api: str) -> UpstreamStream:
        """POST ``body`` and return the response unread, to be relayed chunk by chunk."""
        if self._session is None:
            await self.start()
        target = self._targets[model]
        data = dumps(dict(body, model=target.provider_model))
        try:
            response = await self._session.post(target.urls[api], data=data, headers=target.headers)
        except self._errors() as exc:
            raise UpstreamDown(
                f"upstream for model '{model}' is unreachable ({type(exc).__name__}); check its base_url and that it is running"
            ) from None
        return UpstreamStream(response)
