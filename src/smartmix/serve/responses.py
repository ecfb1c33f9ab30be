"""Bodies the server sends: JSON (orjson), OpenAI-style errors, a decided answer replayed as a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from smartmix.backends.http import dumps, loads

__all__ = ["answer_text", "as_sse", "error_body", "prompt_text", "usage_in"]


def error_body(status: int, message: str, kind: str) -> bytes:
    return dumps({"error": {"message": message, "type": kind, "code": status}})


def prompt_text(body: dict, api: str) -> str:
    """The prompt as one text (what the router reads)."""
    if api == "chat":
        parts = []
        for m in body.get("messages", []):
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            parts.append(content if isinstance(content, str) else "")
        return "\n\n".join(parts)
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else "\n\n".join(map(str, prompt))


def answer_text(response: Any, api: str) -> Any:
    """The first choice's answer as the provider sent it (text, or whatever else it put there); "" if none."""
    try:
        choice = response["choices"][0]
        return choice["message"]["content"] if api == "chat" else choice["text"]
    except (KeyError, IndexError, TypeError):
        return ""


def usage_in(tail: bytes) -> dict | None:
    """The usage object of the last complete server-sent event that has one, if any."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            try:
                usage = loads(line[6:]).get("usage")
            except (ValueError, AttributeError):
                continue
            if usage:
                return usage
    return None


async def as_sse(response: dict, api: str) -> AsyncIterator[bytes]:
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
