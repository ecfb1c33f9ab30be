"""What a request to ``smartmix serve`` may be: its size, its JSON, its ``model`` and its ``messages``.

Every check answers a :class:`BadRequest` (HTTP 400, or 413 for a body over ``[server] max_body_bytes``)
saying what is wrong, before anything is forwarded or paid for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from smartmix.backends.http import loads
from smartmix.errors import ConfigError

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BadRequest", "max_body_bytes", "parse_body", "read_body", "validate"]

# OpenAI accepts requests of a few MB (long prompts, a few images as data URLs); 4 MiB covers those
# and stops a runaway client before it is forwarded and billed.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")


class BadRequest(Exception):
    """The request cannot be served as it is; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def max_body_bytes(server_cfg: Mapping[str, Any]) -> int:
    value = server_cfg.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"[server] max_body_bytes must be a whole number >= 1, not {value!r}")
    return value


async def read_body(headers: Mapping[str, str], stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to be larger than ``limit`` bytes."""
    too_big = BadRequest(f"the request body is larger than this server's limit of {limit:,} bytes", 413)
    declared = headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if size > limit:
            raise too_big
    parts: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise too_big
        parts.append(chunk)
    return b"".join(parts)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 when it is not JSON, nested too deeply, or not an object."""
    try:
        body = loads(raw)
    except ValueError as exc:
        why = "is nested too deeply" if "deeply" in str(exc) else "is not JSON"
        raise BadRequest(f"the request body {why}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body is not a JSON object")
    _check_depth(body)
    return body


def _check_depth(body: dict[str, Any]) -> None:
    """400 for a document nested deeper than JSON encoders go (orjson: 255 levels). orjson parses far
    deeper documents; what cannot be encoded again cannot be forwarded. Serialising once is the fastest
    depth check there is (C, microseconds for a normal request)."""
    import orjson

    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        if "recursion" in str(exc).lower():
            raise BadRequest("the request body is nested too deeply") from None


def validate(body: dict[str, Any], api: str, routes: str) -> str:
    """The route name the body asks for, once the body is a request this endpoint can forward."""
    name = body.get("model")
    if name is None:
        raise BadRequest(f"the request has no 'model': name one of this server's routes ({routes})")
    if not isinstance(name, str):
        raise BadRequest(f"'model' must be text naming a route ({routes}), not {type(name).__name__}")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise BadRequest("'stream' must be true or false")
    if api == "chat":
        _check_messages(body.get("messages"))
    else:
        _check_prompt(body.get("prompt"))
    return name


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise BadRequest("the request has no 'messages': a list of {\"role\": ..., \"content\": ...}")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {\"role\": ..., \"content\": ...}")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object with 'role' and 'content', not {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(f"{where}.role must be one of {', '.join(ROLES)}, not {role!r}")
        if "content" not in message and role != "assistant":
            raise BadRequest(f"{where} has no 'content'")
        content = message.get("content")
        if content is None:
            if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
                continue
            raise BadRequest(f"{where}.content is null (only an assistant message with tool_calls may omit it)")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not content:
            raise BadRequest(f"{where}.content must be text or a non-empty list of parts, not {type(content).__name__}")
        for j, part in enumerate(content):
            _check_part(part, f"{where}.content[{j}]")


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise BadRequest(f"{where} must be an object with a 'type', not {type(part).__name__}")
    kind = part.get("type")
    if kind not in PART_TYPES:
        raise BadRequest(f"{where}.type must be one of {', '.join(PART_TYPES)}, not {kind!r}")
    if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
        raise BadRequest(f"{where}.{kind} must be text")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise BadRequest(f"{where}.image_url must have a 'url'")


def _check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str):
        return
    if prompt is None:
        raise BadRequest("the request has no 'prompt'")
    ok = isinstance(prompt, list) and bool(prompt) and (
        all(isinstance(p, str) for p in prompt)
        or all(isinstance(p, int) and not isinstance(p, bool) for p in prompt)
        or all(isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p) for p in prompt)
    )
    if not ok:
        raise BadRequest("'prompt' must be text, a list of texts, or token ids")
