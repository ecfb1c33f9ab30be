"""``mode="batch"``: the application phase as provider batch jobs on a real local batch server — the same
plan, answers and certificate as synchronous calls, at the batch price, and a run killed while its batch
is pending resumes by polling it (0 resubmissions, counted at the server)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from openai_batch_server import run_batch_server, start_batch_server

import smartmix
from smartmix.api import Job
from smartmix.backends.openai_compat import EndpointConfig, OpenAIBackend
from smartmix.batch import BatchSettings
from smartmix.engine import EngineOptions
from smartmix.journal import Journal
from smartmix.models import ModelSpec, Pool
from smartmix.tasks import Item, LabelComparator, Template

SRC = Path(__file__).resolve().parents[1] / "src"
N = 400


def answer(model: str, prompt: str) -> str:
    digest = hashlib.sha256(prompt.encode()).digest()
    truth = "yes" if digest[0] % 2 else "no"
    if model == "cheap" and digest[1] % 100 < 6:  # the cheap model disagrees on ~6% of items
        return "no" if truth == "yes" else "yes"
    return truth


def make_job(base_url: str) -> Job:
    items = [Item(id=f"q{i}", fields={"n": str(i)}) for i in range(N)]
    endpoints = {name: EndpointConfig(name, base_url=base_url, max_concurrency=32) for name in ("cheap", "big")}
    pool = Pool([ModelSpec("cheap", 0.15, 0.6, batch_price_factor=0.5),
                 ModelSpec("big", 2.5, 10.0, batch_price_factor=0.5)], "big")
    return Job(items=items, pool=pool, template=Template(user="Claim {n}: yes or no?"),
               comparator=LabelComparator(["yes", "no"]), backend=OpenAIBackend(endpoints),
               source="test")


def run(base_url: str, run_dir: Path, mode: str, method: str = "mix"):
    journal = Journal(run_dir / "journal.sqlite")
    journal.start_run("r1", {"mode": mode}, 0)
    try:
        return smartmix.run(job=make_job(base_url), target=0.9, confidence=0.95, method=method, seed=3,
                            journal=journal, run_id="r1", mode=mode, options=EngineOptions(),
                            batch_settings=BatchSettings(poll_interval_s=0.02, poll_max_interval_s=0.05))
    finally:
        journal.close()


@pytest.mark.parametrize("method", ["mix", "efficient"])
def test_batch_mode_answers_as_sync_at_the_batch_price(tmp_path, method):
    with run_batch_server(process_s=0.1) as server:
        server.control.set_answers(answer)
        sync = run(server.base_url, tmp_path / "sync", "sync", method)
        before = server.accounting()
        batch = run(server.base_url, tmp_path / "batch", "batch", method)
        after = server.accounting()
    assert [(r.id, r.answer, r.model) for r in batch.items] == [(r.id, r.answer, r.model) for r in sync.items]
    assert batch.certificate.statement() == sync.certificate.statement()
    assert batch.certificate.shares == sync.certificate.shares
    phases = lambda result, phase: sum(c for (_, p), c in result.ledger.entries.items() if p == phase)  # noqa: E731
    assert phases(batch, "profiling") == pytest.approx(phases(sync, "profiling"), rel=1e-12)
    assert phases(sync, "application") > 0
    assert phases(batch, "application") == pytest.approx(0.5 * phases(sync, "application"), rel=1e-9)
    assert after["batches_created"] > before["batches_created"] and after["resubmissions"] == 0


_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
    from pathlib import Path
    import test_batch_mode as t
    result = t.run({url!r}, Path({run_dir!r}), "batch")
    print("BILL", result.total_cost)
""")


def test_killed_while_a_batch_is_pending_resumes_without_resubmitting(tmp_path):
    run_dir = tmp_path / "run"
    with start_batch_server(process_s=4.0) as server:
        code = _CHILD.format(src=str(SRC), tests=str(Path(__file__).parent), url=server.base_url, run_dir=str(run_dir))
        # the answers of this provider process are its default ones: fine for counting submissions
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180  # generous: a loaded machine starts Python slowly
        while server.accounting()["batches_created"] == 0:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no batch was created"
            time.sleep(0.05)
        time.sleep(0.3)
        child.kill()
        child.wait()
        rerun = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        accounting = server.accounting()
    assert accounting["resubmissions"] == 0
    assert accounting["batches_created"] >= 1
    assert accounting["answered"] == accounting["distinct_requests"]
    assert "BILL" in rerun.stdout
    assert json.loads(json.dumps(accounting))  # plain data, for the benchmark report
