"""HTTP for the OpenAI-compatible backend: one keep-alive aiohttp session per backend, JSON through orjson.

Batch runs and ``smartmix serve`` send every request through this one transport. It was chosen for the
server's sake: under 200 concurrent clients an httpx-based client (the openai SDK's) spent about 3 ms of
CPU per request, most of it in its connection pool, where aiohttp + orjson spend about 0.5 ms
(benchmarks/server_load.py). The session belongs to the event loop it was opened on; it is opened on the
first request and closed by :meth:`Transport.aclose`.

Errors keep the shape the backend's error classifier reads: :class:`HTTPStatusError` for an answer with
status >= 400 (``status_code``, ``body``, ``headers``, ``code``); aiohttp's own exceptions for a
connection that failed or dropped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

__all__ = ["HTTPStatusError", "StreamResponse", "Transport", "dumps", "loads"]


def dumps(value: Any) -> bytes:
    """JSON bytes of ``value`` (orjson; the standard library for what orjson refuses, e.g. huge ints)."""
    import orjson

    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


# orjson parses without a depth limit of its own and overflows the C stack (a segmentation fault, the
# whole process gone) on a document nested ~100,000 deep. A document with fewer opening brackets than
# this cannot be that deep, so orjson reads it; anything else goes to the standard library, which stops
# at the interpreter's recursion limit with an exception.
_ORJSON_MAX_BRACKETS = 255


def loads(data: bytes | str) -> Any:
    """Parsed JSON. ValueError when it is not JSON, is nested too deeply, or is not UTF-8.

    orjson when the document cannot be deeply nested (almost always); otherwise, and for what orjson
    refuses but JSON allows in practice (NaN), the standard library.
    """
    import orjson

    if isinstance(data, str):
        brackets = data.count("{") + data.count("[")
    else:
        brackets = data.count(b"{") + data.count(b"[")
    if brackets <= _ORJSON_MAX_BRACKETS:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError as bad:
        raise ValueError(str(bad)) from None


class HTTPStatusError(Exception):
    """The server answered with status >= 400."""

    def __init__(self, status_code: int, body: Any, headers: Mapping[str, str], raw: bytes = b""):
        self.status_code = status_code
        self.body = body if isinstance(body, dict) else None
        self.headers = dict(headers)
        error = self.body.get("error") if self.body else None
        self.code = error.get("code") if isinstance(error, dict) else None
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
        elif isinstance(error, str):
            message = error
        else:
            message = raw[:200].decode("utf-8", "replace") or f"HTTP {status_code}"
        self.message = message
        super().__init__(f"HTTP {status_code}: {message}")


class StreamResponse:
    """An answer being streamed: ``status`` and ``headers`` now, the body chunk by chunk, then :meth:`close`."""

    def __init__(self, response: Any):
        self._response = response
        self.status: int = response.status
        self.headers = dict(response.headers)

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk

    async def read(self) -> bytes:
        return await self._response.read()

    def close(self) -> None:
        # release() returns a fully read connection to the pool; an interrupted one is closed instead
        self._response.release()


class Transport:
    """One pooled keep-alive session. Not bound to a model: per-model limits are the backend's gates."""

    def __init__(self, *, connections: int = 0, read_timeout_s: float = 600.0):
        self.connections = connections  # keep-alive connections, all hosts together; 0 = no limit of its own
        self.read_timeout_s = read_timeout_s
        self._session: Any = None

    def open(self) -> Any:
        """The session, opened on the running event loop if it is not open yet."""
        if self._session is None or self._session.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=60, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # each request carries its own bound on the whole exchange; these only catch a silent peer
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=self.read_timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(),  # nothing carried from one request to the next
                raise_for_status=False,
                auto_decompress=True,
            )
        return self._session

    def timeout(self, seconds: float) -> Any:
        """A per-request bound on the whole exchange, for :meth:`post_json` (aiohttp's own timer: one
        timer per request and no task-cancelling machinery on the hot path)."""
        import aiohttp

        return aiohttp.ClientTimeout(total=seconds)

    async def post_json(self, url: str, data: bytes, headers: Mapping[str, str], timeout: Any = None) -> bytes:
        """POST and return the body of a 2xx answer; :class:`HTTPStatusError` otherwise. ``timeout``
        (from :meth:`timeout`) bounds the whole exchange; a request over it raises ``TimeoutError``."""
        kwargs = {"timeout": timeout} if timeout is not None else {}
        async with self.open().post(url, data=data, headers=headers, **kwargs) as response:
            raw = await response.read()
            if response.status >= 400:
                raise _status_error(response.status, response.headers, raw)
        return raw

    async def open_stream(self, url: str, data: bytes, headers: Mapping[str, str]) -> StreamResponse:
        """POST and return the answer unread (to be relayed); :class:`HTTPStatusError` if status >= 400."""
        response = await self.open().post(url, data=data, headers=headers)
        if response.status >= 400:
            try:
                raw = await response.read()
            finally:
                response.release()
            raise _status_error(response.status, response.headers, raw)
        return StreamResponse(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _status_error(status: int, headers: Mapping[str, str], raw: bytes) -> HTTPStatusError:
    try:
        body = loads(raw)
    except ValueError:
        body = None
    return HTTPStatusError(status, body, headers, raw)
