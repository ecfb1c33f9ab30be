"""Provider batch jobs against a real OpenAI-compatible batch server on 127.0.0.1: submit, poll, read,
retry what failed in smaller batches, and resume an interrupted run by polling — never resubmitting."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from openai_batch_server import run_batch_server, start_batch_server

from smartmix.backends.openai_compat import EndpointConfig, OpenAIBackend
from smartmix.batch import BatchRunner, BatchSettings, BatchStore
from smartmix.domain import Message, Request
from smartmix.errors import ProviderError
from smartmix.journal import request_hash

SRC = Path(__file__).resolve().parents[1] / "src"
FAST = BatchSettings(poll_interval_s=0.02, poll_max_interval_s=0.05)


def _requests(n: int, model: str = "small") -> dict[str, Request]:
    out = {}
    for i in range(n):
        r = Request(model=model, messages=(Message("user", f"question {i}?"),), item_id=str(i),
                    params=(("max_tokens", 4),))
        out[request_hash(r)] = r
    return out


async def _run(base_url: str, journal: Path, requests: dict[str, Request], settings=FAST, run_id="run1"):
    backend = OpenAIBackend({"small": EndpointConfig("small", base_url=base_url)})
    apis = {}

    def api_for(model):
        if model not in apis:
            apis[model] = backend.batch_api(model)
        return apis[model]

    with BatchStore(journal) as store:
        runner = BatchRunner(api_for=api_for, body_for=backend.request_body, parse=backend.parse_body,
                             store=store, run_id=run_id, settings=settings)
        try:
            return await runner.run(requests)
        finally:
            for api in apis.values():
                await api.aclose()
            await backend.aclose()


def test_batches_answer_like_synchronous_calls(tmp_path):
    requests = _requests(40)
    with run_batch_server() as server:
        outcome = asyncio.run(_run(server.base_url, tmp_path / "j.sqlite", requests,
                                   BatchSettings(max_requests=15, poll_interval_s=0.02)))
        # the same requests, answered synchronously by the same provider
        backend = OpenAIBackend({"small": EndpointConfig("small", base_url=server.base_url)})

        async def sync():
            try:
                return {cid: await backend.complete(r) for cid, r in requests.items()}
            finally:
                await backend.aclose()

        direct = asyncio.run(sync())
        accounting = server.accounting()
    assert not outcome.errors
    assert set(outcome.completions) == set(requests)
    for cid, completion in outcome.completions.items():
        assert completion.text == direct[cid].text
        assert (completion.input_tokens, completion.output_tokens) == (direct[cid].input_tokens, direct[cid].output_tokens)
    assert outcome.submitted_batches == 3  # 40 requests, at most 15 a batch
    assert accounting["batches_created"] == 3 and accounting["resubmissions"] == 0
    assert accounting["requests_submitted"] == 40


def test_failed_and_expired_requests_are_retried_in_smaller_batches(tmp_path):
    requests = _requests(60)
    with run_batch_server(fail_fraction=0.25, seed=3) as server:
        outcome = asyncio.run(_run(server.base_url, tmp_path / "j.sqlite", requests))
        accounting = server.accounting()
    assert not outcome.errors and len(outcome.completions) == 60
    assert outcome.resubmitted_requests > 0
    assert accounting["answered"] == 60  # every request answered (billed) once
    assert outcome.submitted_batches >= 2

    with run_batch_server(expire_after=0.5) as server:
        outcome = asyncio.run(_run(server.base_url, tmp_path / "k.sqlite", _requests(20)))
        accounting = server.accounting()
    # expiry keeps half of every batch, so it takes several rounds; max_rounds bounds them
    assert len(outcome.completions) + len(outcome.errors) == 20
    assert accounting["answered"] == len(outcome.completions)
    assert all("expired" in message for message in outcome.errors.values())


def test_a_rejected_batch_is_reported_not_retried(tmp_path):
    requests = _requests(5)
    with run_batch_server() as server:
        # a body the provider refuses (two models in one file is refused; here: fake it with a wrong endpoint)
        backend = OpenAIBackend({"small": EndpointConfig("small", base_url=server.base_url)})

        async def go():
            api = backend.batch_api("small")
            api.endpoint = "/v1/embeddings"  # not served: the batch is refused at creation
            with BatchStore(tmp_path / "j.sqlite") as store:
                runner = BatchRunner(api_for=lambda m: api, body_for=backend.request_body,
                                     parse=backend.parse_body, store=store, run_id="r", settings=FAST)
                try:
                    return await runner.run(requests)
                finally:
                    await api.aclose()
                    await backend.aclose()

        with pytest.raises(ProviderError) as info:
            asyncio.run(go())
        assert "refused a batch of 5 requests" in str(info.value) and "--mode sync" in str(info.value)
        assert server.accounting()["requests_submitted"] == 0


_CHILD = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
    from test_batch_runner import _requests, _run
    from smartmix.batch import BatchSettings
    outcome = asyncio.run(_run({url!r}, __import__("pathlib").Path({journal!r}), _requests(30),
                               BatchSettings(poll_interval_s=0.05, poll_max_interval_s=0.05)))
    print(json.dumps({{"answers": len(outcome.completions), "resumed": outcome.resumed_batches,
                      "submitted": outcome.submitted_batches}}))
""")


def test_a_run_killed_while_its_batch_is_pending_resumes_by_polling(tmp_path):
    journal = tmp_path / "journal.sqlite"
    with start_batch_server(process_s=3.0) as server:
        code = _CHILD.format(src=str(SRC), tests=str(Path(__file__).parent), url=server.base_url, journal=str(journal))
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180  # generous: a loaded machine starts Python slowly
        while server.accounting()["batches_created"] == 0:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the batch was never created"
            time.sleep(0.05)
        time.sleep(0.2)
        child.kill()
        child.wait()
        with BatchStore(journal) as store:
            pending = store.pending("run1")
        assert len(pending) == 1 and pending[0].batch_id  # journaled before the kill
        rerun = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        result = json.loads(rerun.stdout.strip().splitlines()[-1])
        accounting = server.accounting()
    assert result == {"answers": 30, "resumed": 1, "submitted": 0}
    assert accounting["batches_created"] == 1 and accounting["resubmissions"] == 0
    assert accounting["answered"] == 30
