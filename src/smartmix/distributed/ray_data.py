"""The application phase as a Ray Data pipeline, with a journal per partition so retries never pay twice.

Profiling stays on the driver: it is small and sequential. The calls of the application phase are split
into partitions by their request hash (a request always lands in the same partition), and Ray Data maps
each partition through a worker that builds the backend from a picklable factory, reads its partition's
journal, calls only what is not in it, and writes every answer there *before* returning it. When Ray
retries a partition (a worker died, a node was lost), the retry reads back what the dead attempt paid
for. The driver then records the answers in the run's journal like any other call, and the partition
files can go.

On one machine the partition journals live in the run directory. On a cluster, ``workdir`` must be storage
every worker can write (NFS, a mounted bucket): see docs/scale.md.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smartmix.backends.base import Backend
from smartmix.domain import Completion, Message, Request
from smartmix.errors import MissingExtraError, ProviderError

BackendFactory = Callable[[], Backend]


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: start a local cluster; "auto" or "ray://host:10001" for an existing one
    num_cpus: int | None = None  # for a local cluster
    partitions: int | None = None  # default: 4 per CPU of the cluster
    concurrency: int = 16  # calls in flight per partition


def _ensure_ray(settings: RaySettings) -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "the Ray engine needs Ray Data: pip install 'smartmix[ray]' (or pip install 'ray[data]')"
        ) from None
    if not ray.is_initialized():
        ray.init(address=settings.address, num_cpus=settings.num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    return ray


def partition_of(custom_id: str, partitions: int) -> int:
    return int(custom_id[:8], 16) % partitions


def _request_row(custom_id: str, request: Request) -> dict[str, Any]:
    return {"id": custom_id, "model": request.model, "item_id": request.item_id,
            "messages": [[m.role, m.content] for m in request.messages],
            "params": [[k, v] for k, v in request.params]}


def _row_request(row: Mapping[str, Any]) -> Request:
    return Request(model=row["model"], messages=tuple(Message(r, c) for r, c in row["messages"]),
                   item_id=row["item_id"], params=tuple((k, v) for k, v in row["params"]))


class PartitionCaller:
    """What a Ray worker runs for one partition (a picklable callable)."""

    def __init__(self, make_backend: BackendFactory, run_id: str, concurrency: int):
        self.make_backend = make_backend
        self.run_id = run_id
        self.concurrency = concurrency

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"partition": row["partition"], "results": asyncio.run(self._run(row))}

    async def _run(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        from smartmix.journal import Journal

        journal = Journal(row["journal"])
        journal.start_run(self.run_id, {"partition": row["partition"]}, 0)
        backend = self.make_backend()
        gate = asyncio.Semaphore(self.concurrency)

        async def one(req_row: dict[str, Any]) -> dict[str, Any]:
            request = _row_request(req_row)
            done = journal.lookup(request, run_id=self.run_id)
            if done is not None:  # paid by an earlier attempt of this partition
                return {"id": req_row["id"], "completion": _completion_dict(done), "error": None, "reused": True}
            async with gate:
                try:
                    completion = await backend.complete(request)
                except ProviderError as exc:
                    return {"id": req_row["id"], "completion": None, "error": str(exc), "reused": False}
            journal.record(self.run_id, request, completion, phase="application",
                           cost_usd=float(completion.cost_usd or 0.0))
            return {"id": req_row["id"], "completion": _completion_dict(completion), "error": None, "reused": False}

        try:
            return list(await asyncio.gather(*(one(r) for r in row["requests"])))
        finally:
            await backend.aclose()
            journal.close()


def _completion_dict(completion: Completion) -> dict[str, Any]:
    data = asdict(completion)
    data["extra"] = {k: v for k, v in completion.extra.items() if isinstance(v, str | int | float | bool)}
    return data


def _completion(data: Mapping[str, Any]) -> Completion:
    fields = dict(data)
    if fields.get("top_logprobs") is not None:
        fields["top_logprobs"] = tuple((str(t), float(lp)) for t, lp in fields["top_logprobs"])
    return Completion(**fields)


@dataclass
class RayOutcome:
    completions: dict[str, Completion]
    errors: dict[str, str]
    reused: int  # answers a retried partition read back from its journal instead of paying again
    partitions: int


class RayTransport:
    """Calls many requests through a Ray Data pipeline; ``make_backend`` builds the backend in each worker."""

    def __init__(self, make_backend: BackendFactory, workdir: str | Path, run_id: str,
                 settings: RaySettings = RaySettings()):
        self.make_backend = make_backend
        self.workdir = Path(workdir)
        self.run_id = run_id
        self.settings = settings

    def journal_path(self, partition: int) -> Path:
        return self.workdir / f"ray-{self.run_id}-part{partition:04d}.sqlite"

    def complete_many(self, requests: Mapping[str, Request]) -> RayOutcome:
        ray = _ensure_ray(self.settings)
        if not requests:
            return RayOutcome({}, {}, 0, 0)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        partitions = self.settings.partitions or max(1, 4 * cpus)
        partitions = min(partitions, max(1, math.ceil(len(requests) / 16)))
        self.workdir.mkdir(parents=True, exist_ok=True)
        rows: dict[int, list[dict[str, Any]]] = {}
        for cid, request in requests.items():
            rows.setdefault(partition_of(cid, partitions), []).append(_request_row(cid, request))
        items = [{"partition": p, "journal": str(self.journal_path(p)), "requests": reqs} for p, reqs in rows.items()]
        caller = PartitionCaller(self.make_backend, self.run_id, self.settings.concurrency)
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        completions: dict[str, Completion] = {}
        errors: dict[str, str] = {}
        reused = 0
        for out in dataset.map(caller, ray_remote_args_fn=_retry_lost_workers).iter_rows():
            for result in out["results"]:
                if result["error"] is not None:
                    errors[result["id"]] = result["error"]
                else:
                    completions[result["id"]] = _completion(result["completion"])
                    reused += bool(result["reused"])
        return RayOutcome(completions, errors, reused, len(items))

    def forget(self) -> None:
        """Delete the partition journals (once the driver has recorded every answer in the run's journal)."""
        for path in self.workdir.glob(f"ray-{self.run_id}-part*.sqlite*"):
            path.unlink(missing_ok=True)


def _retry_lost_workers() -> dict[str, Any]:
    """A partition whose worker died runs again (its journal makes that free for calls already paid)."""
    return {"max_retries": 3}
