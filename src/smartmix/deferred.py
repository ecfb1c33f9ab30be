"""Calls that are sent together: provider batch jobs and Ray pipelines as a *backend*, not a new loop.

The engine answers the application phase exactly as it always does — journal look-up, the run-wide cost
cap, identical requests sent once, journal before use — and only the last step differs: instead of one
HTTP request per call, :class:`DeferredBackend` holds each call until every call of the stage is waiting,
then sends them all at once through a *bulk sender* (a provider batch job, a Ray Data pipeline) and hands
each waiting call its completion. Profiling keeps the synchronous backend: it is small and sequential.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smartmix.domain import Completion, Request
from smartmix.errors import ProviderError


@dataclass
class BulkOutcome:
    completions: dict[str, Completion] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


BulkSender = Callable[[Mapping[str, Request]], Awaitable[BulkOutcome]]


def _key(request: Request) -> str:
    from smartmix.journal import request_hash

    return request_hash(request)


class DeferredBackend:
    """A backend whose ``complete`` waits until :meth:`flush` sends every waiting call in one go."""

    def __init__(self, send_many: BulkSender, *, closes: Any = None, mode: str = "batch"):
        self.send_many = send_many
        self.closes = closes
        self.mode = mode
        self._waiting: dict[str, tuple[Request, list[asyncio.Future]]] = {}
        # Set when a send failed: the run is stopping, and no call may wait for a send that never comes
        # (e.g. a call that was waiting for --max-cost budget and gets it when the failed ones release theirs).
        self._failed: BaseException | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def complete(self, request: Request) -> Completion:
        if self._failed is not None:
            raise ProviderError(f"not sent: an earlier {self.mode} send failed ({self._failed})")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        key = _key(request)
        self._waiting.setdefault(key, (request, []))[1].append(future)
        return await future

    async def flush(self) -> None:
        """Send every waiting call together; each caller gets its completion or a ProviderError."""
        batch, self._waiting = self._waiting, {}
        if not batch:
            return
        try:
            outcome = await self.send_many({key: request for key, (request, _) in batch.items()})
        except BaseException as exc:
            self._failed = exc
            for _, futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            raise
        for key, (_, futures) in batch.items():
            completion = outcome.completions.get(key)
            for n, future in enumerate(futures):
                if future.done():
                    continue
                if completion is not None:
                    future.set_result(completion if n == 0 else _copy(completion))
                else:
                    message = outcome.errors.get(key, "no answer came back for this request")
                    future.set_exception(ProviderError(f"{self.mode} call failed: {message}"))

    async def aclose(self) -> None:
        if self.closes is not None:
            await self.closes.aclose()


def _copy(completion: Completion) -> Completion:
    from dataclasses import replace

    return replace(completion, extra=dict(completion.extra))


async def run_deferred(tasks: list[asyncio.Future], backend: DeferredBackend, idle_rounds: int = 3) -> None:
    """Drive ``tasks`` (calls that end in ``backend``) to completion: whenever every task still running is
    waiting — on the deferred backend, on a shared answer, on budget — send what the backend holds."""
    while not all(task.done() for task in tasks):
        quiet = 0
        last = (backend.waiting, sum(task.done() for task in tasks))
        while quiet < idle_rounds:
            await asyncio.sleep(0)
            now = (backend.waiting, sum(task.done() for task in tasks))
            quiet = quiet + 1 if now == last else 0
            last = now
            if all(task.done() for task in tasks):
                return
        if backend.waiting:
            await backend.flush()
        else:  # nothing to send yet: something else is in progress (a journal write); let it run
            await asyncio.sleep(0.005)
