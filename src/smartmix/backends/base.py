"""The backend protocol: one request in, one completion out.

Real providers, recorded outputs and the simulator sit behind the same small async method, so the
engine never knows which one it talks to. Requests and completions are domain types
(:mod:`smartmix.domain.calls`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from smartmix.domain import Completion, Request


@runtime_checkable
class Backend(Protocol):
    """Anything that can answer a request. Implementations must be safe to call concurrently."""

    async def complete(self, request: Request) -> Completion: ...

    async def aclose(self) -> None: ...
