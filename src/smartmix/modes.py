"""How the application phase is executed: ``sync`` (one call at a time, concurrently), ``batch`` (provider
batch jobs, about half price, answers within the provider's window) or ``ray`` (a Ray Data pipeline).

Each is a *source of answers* for the same engine (see :mod:`smartmix.deferred`): the plan, the journal,
the cap and the certificate do not change with the mode; only the money and the wall time do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from smartmix.backends.base import Backend
from smartmix.deferred import BulkOutcome, DeferredBackend
from smartmix.domain import Request
from smartmix.errors import ConfigError

MODES = ("sync", "batch", "ray")


def application_backend(
    mode: str,
    *,
    backend: Backend,
    journal_path: str | Path | None,
    run_id: str | None,
    backend_factory: Callable[[], Backend] | None = None,
    batch_settings: Any = None,
    ray_settings: Any = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> DeferredBackend | None:
    """The application phase's channel for ``mode`` (None for ``sync``: the backend itself)."""
    if mode == "sync":
        return None
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: choose sync, batch or ray")
    if journal_path is None or run_id is None:
        raise ConfigError(
            f"--mode {mode} needs a run directory (its journal remembers every batch and partition so that a "
            "rerun resumes without paying twice): pass --run-dir runs, or run with --config"
        )
    if mode == "batch":
        return _batch_channel(backend, Path(journal_path), run_id, batch_settings, progress)
    return _ray_channel(backend, backend_factory, Path(journal_path).parent, run_id, ray_settings)


def _batch_channel(backend: Backend, journal_path: Path, run_id: str, settings: Any,
                   progress: Callable[[dict[str, Any]], None] | None) -> DeferredBackend:
    from smartmix.batch import BatchRunner, BatchSettings, BatchStore
    from smartmix.batch.runner import BatchStillPending

    needed = ("batch_api", "request_body", "parse_body")
    if not all(callable(getattr(backend, name, None)) for name in needed):
        raise ConfigError(
            "--mode batch needs models on an OpenAI-compatible endpoint with the Files and Batches APIs "
            f"(this job's backend, {type(backend).__name__}, has none); use --mode sync"
        )
    store = BatchStore(journal_path)
    apis: dict[str, Any] = {}

    def api_for(model: str) -> Any:
        if model not in apis:
            apis[model] = backend.batch_api(model)  # type: ignore[attr-defined]
        return apis[model]

    runner = BatchRunner(api_for=api_for, body_for=backend.request_body,  # type: ignore[attr-defined]
                         parse=backend.parse_body, store=store, run_id=run_id,  # type: ignore[attr-defined]
                         settings=settings or BatchSettings(), progress=progress)

    async def send(requests: Mapping[str, Request]) -> BulkOutcome:
        outcome = await runner.run(requests)
        if outcome.pending:
            raise BatchStillPending(
                f"{len(outcome.pending)} provider batch job(s) are still running ({', '.join(outcome.pending[:3])}). "
                "They are journaled: rerun the same command later to collect them; nothing is submitted twice."
            )
        return BulkOutcome(outcome.completions, outcome.errors)

    return DeferredBackend(send, closes=_Closer(apis, store), mode="batch")


def _ray_channel(backend: Backend, factory: Callable[[], Backend] | None, workdir: Path, run_id: str,
                 settings: Any) -> DeferredBackend:
    from smartmix.distributed.ray_data import RaySettings, RayTransport

    if factory is None:
        raise ConfigError("--mode ray needs a job whose backend can be rebuilt in each worker (a job file or "
                          "recorded outputs)")
    transport = RayTransport(factory, workdir, run_id, settings or RaySettings())

    async def send(requests: Mapping[str, Request]) -> BulkOutcome:
        outcome = await asyncio.to_thread(transport.complete_many, requests)
        return BulkOutcome(outcome.completions, outcome.errors)

    channel = DeferredBackend(send, mode="ray")
    channel.transport = transport  # type: ignore[attr-defined]
    return channel


class _Closer:
    def __init__(self, apis: dict[str, Any], store: Any):
        self.apis, self.store = apis, store

    async def aclose(self) -> None:
        for api in self.apis.values():
            await api.aclose()
        self.store.close()
