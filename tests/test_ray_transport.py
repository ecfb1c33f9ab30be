"""The Ray Data application pipeline on a local 2-CPU Ray cluster started by the test, against a real
OpenAI-compatible server on 127.0.0.1 that counts every paid request."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from openai_server import run_server

from smartmix.backends.openai_compat import EndpointConfig, OpenAIBackend
from smartmix.domain import Message, Request
from smartmix.journal import request_hash

ray = pytest.importorskip("ray")

from smartmix.distributed.ray_data import RaySettings, RayTransport  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    here = Path(__file__).resolve().parent
    # workers import this module (the backends below are defined here) and smartmix from this checkout
    path = os.pathsep.join([str(here), str(here.parent / "src"), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def _requests(n: int) -> dict[str, Request]:
    out = {}
    for i in range(n):
        r = Request(model="small", messages=(Message("user", f"item {i}: yes or no?"),), item_id=str(i))
        out[request_hash(r)] = r
    return out


class _DiesOnce:
    """A worker's backend that kills its whole process after a few paid calls, the first time only: what a
    lost Ray worker looks like to the partition it was running."""

    def __init__(self, base_url: str, marker: str, after: int):
        self.backend = OpenAIBackend({"small": EndpointConfig("small", base_url=base_url)})
        self.marker, self.after, self.calls = marker, after, 0

    async def complete(self, request):
        completion = await self.backend.complete(request)
        self.calls += 1
        if self.calls == self.after and not os.path.exists(self.marker):
            Path(self.marker).write_text("died")
            os._exit(1)
        return completion

    async def aclose(self):
        await self.backend.aclose()


def test_ray_pipeline_answers_every_request_once(local_ray, tmp_path):
    requests = _requests(120)
    with run_server() as server:
        url = server.base_url
        transport = RayTransport(lambda: OpenAIBackend({"small": EndpointConfig("small", base_url=url)}),
                                 tmp_path, "run1", RaySettings(partitions=4))
        outcome = transport.complete_many(requests)
        paid = server.control.paid
    assert not outcome.errors and set(outcome.completions) == set(requests)
    assert len(paid) == 120  # every request paid exactly once
    expected = {r.messages[0].content: server.control.answer_for("small", r.messages[0].content)
                for r in requests.values()}
    for cid, completion in outcome.completions.items():
        assert completion.text == expected[requests[cid].messages[0].content]


def test_a_worker_that_dies_is_retried_without_paying_twice(local_ray, tmp_path):
    requests = _requests(80)
    marker = str(tmp_path / "died")
    with run_server() as server:
        url = server.base_url
        transport = RayTransport(lambda: _DiesOnce(url, marker, after=7), tmp_path, "run2",
                                 RaySettings(partitions=2, concurrency=1))
        outcome = transport.complete_many(requests)
        paid = server.control.paid
    assert os.path.exists(marker), "the worker never died: the test did not test anything"
    assert not outcome.errors and len(outcome.completions) == 80
    prompts = [entry["prompt"] for entry in paid]
    assert len(set(prompts)) == 80
    # Only the call in flight when the worker died (answered, not yet journaled) may be paid again, as with
    # kill -9 of a local run; the six before it come back from the partition's journal.
    assert len(prompts) - 80 <= 1
    assert outcome.reused >= 6


def test_ray_mode_equals_the_local_engine(local_ray, tmp_path, shared_data):
    """The same recorded job run locally and with the application phase on Ray: identical answers, costs
    and certificate (and the partition journals are gone once the run's journal holds every answer)."""
    import smartmix
    from smartmix.journal import Journal

    path = shared_data / "mmlu-qwen-oai" / "test.jsonl"
    results = {}
    for mode in ("sync", "ray"):
        run_dir = tmp_path / mode
        journal = Journal(run_dir / "journal.sqlite")
        journal.start_run("r", {"mode": mode}, 0)
        try:
            results[mode] = smartmix.run(path, reference="gpt-4o", target=0.8, method="mix", seed=2,
                                         journal=journal, run_id="r", mode=mode,
                                         ray_settings=RaySettings(partitions=4))
        finally:
            journal.close()
    local, distributed = results["sync"], results["ray"]
    assert [(r.id, r.answer, r.model, r.cost) for r in distributed.items] == [
        (r.id, r.answer, r.model, r.cost) for r in local.items
    ]
    assert distributed.total_cost == pytest.approx(local.total_cost, rel=1e-12)
    assert distributed.certificate == local.certificate
    assert sum(r.model != "gpt-4o" for r in local.items) > 0  # the application phase really ran on Ray
    assert not list((tmp_path / "ray").glob("ray-r-part*"))
