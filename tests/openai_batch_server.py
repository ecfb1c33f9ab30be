"""A real OpenAI-compatible *batch* provider for tests and benchmarks: FastAPI + uvicorn on 127.0.0.1.

It speaks the Files and Batches APIs as OpenAI documents them — ``POST /v1/files`` (multipart, purpose
``batch``), ``GET /v1/files/{id}`` and ``/content``, ``POST /v1/batches``, ``GET /v1/batches/{id}``,
``GET /v1/batches``, ``POST /v1/batches/{id}/cancel`` — on top of the synchronous test provider of
``openai_server.py`` (same answers, same logprobs, same request log), so a job can be priced both ways.

A batch moves ``validating → in_progress → finalizing → completed`` on a background task, answering its
requests with the same deterministic answer function as the synchronous endpoints. Output lines are
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}``; requests that
fail go to the error file with ``response.status_code`` 500 or ``error.code``; a batch that *expires*
keeps the answers it computed in the output file and lists the rest in the error file with
``error.code == "batch_expired"``.

:class:`BatchControl` (in-process) or ``POST /control/batch`` tells it how to behave: seconds per phase,
a seeded fraction of failing requests, expiry after a fraction of a batch. ``GET /control/batch`` returns
the accounting the tests check: every ``custom_id`` submitted (so a resubmission is counted), every
request answered and its tokens per model (what a provider bills), batches created.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_server import Control, create_app, free_port  # noqa: E402

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")


@dataclass
class BatchControl:
    """How the batch side behaves, and what it was asked to do (thread-safe enough: one event loop)."""

    validate_s: float = 0.05
    process_s: float = 0.2  # time to answer a whole batch
    finalize_s: float = 0.05
    fail_fraction: float = 0.0  # share of requests answered with an error line
    expire_after: float | None = None  # expire once this share of a batch is answered
    seed: int = 0
    submitted: Counter = field(default_factory=Counter)  # custom_id -> times submitted in a created batch
    answered: int = 0  # requests answered (billed)
    tokens: dict = field(default_factory=dict)  # model -> [input, output] tokens of the answered requests
    batches_created: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def configure(self, **settings: Any) -> None:
        for name, value in settings.items():
            if name not in {"validate_s", "process_s", "finalize_s", "fail_fraction", "expire_after", "seed"}:
                raise ValueError(f"unknown batch setting {name!r}")
            setattr(self, name, value)
        self._rng = random.Random(self.seed)

    def accounting(self) -> dict[str, Any]:
        resubmitted = sum(n - 1 for n in self.submitted.values() if n > 1)
        return {
            "batches_created": self.batches_created,
            "requests_submitted": sum(self.submitted.values()),
            "distinct_requests": len(self.submitted),
            "resubmissions": resubmitted,
            "answered": self.answered,
            "tokens": {model: list(pair) for model, pair in self.tokens.items()},
        }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


class _Store:
    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.counter = 0

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter:06d}"

    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = self.new_id("file")
        meta = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[file_id] = meta
        self.contents[file_id] = content
        return meta


def add_batch_routes(app: FastAPI, control: Control, batch: BatchControl) -> None:
    """Mount the Files and Batches APIs on ``app`` (the synchronous test provider)."""
    store = _Store()
    tasks: set[asyncio.Task] = set()

    @app.post("/v1/files")
    async def upload(file: UploadFile = File(...), purpose: str = Form(...)) -> Any:  # noqa: B008
        content = await file.read()
        return store.add_file(content, file.filename or "upload.jsonl", purpose)

    @app.get("/v1/files/{file_id}")
    async def file_meta(file_id: str) -> Any:
        meta = store.files.get(file_id)
        return meta if meta else _error(404, f"No such File object: {file_id}")

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        if file_id not in store.contents:
            return _error(404, f"No such File object: {file_id}")
        return Response(store.contents[file_id], media_type="application/octet-stream")

    @app.post("/v1/batches")
    async def create(body: dict[str, Any]) -> Any:
        file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        if file_id not in store.contents:
            return _error(400, f"input_file_id {file_id!r} does not exist")
        if endpoint not in ENDPOINTS:
            return _error(400, f"endpoint must be one of {ENDPOINTS}")
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window must be '24h'")
        lines, problem = _parse_input(store.contents[file_id], endpoint)
        batch_id = store.new_id("batch")
        now = int(time.time())
        obj: dict[str, Any] = {
            "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": file_id,
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        store.batches[batch_id] = obj
        batch.batches_created += 1
        if problem is None:
            for line in lines:
                batch.submitted[line["custom_id"]] += 1
        task = asyncio.create_task(_process(obj, lines, problem))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return obj

    @app.get("/v1/batches/{batch_id}")
    async def retrieve(batch_id: str) -> Any:
        obj = store.batches.get(batch_id)
        return obj if obj else _error(404, f"No such Batch object: {batch_id}")

    @app.get("/v1/batches")
    async def listing(limit: int = 20) -> Any:
        data = list(store.batches.values())[-limit:]
        return {"object": "list", "data": data, "has_more": False}

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel(batch_id: str) -> Any:
        obj = store.batches.get(batch_id)
        if not obj:
            return _error(404, f"No such Batch object: {batch_id}")
        if obj["status"] in ("validating", "in_progress"):
            obj["status"], obj["cancelling_at"] = "cancelling", int(time.time())
        return obj

    @app.post("/control/batch")
    async def control_batch(body: dict[str, Any]) -> Any:
        batch.configure(**body)
        return {"ok": True}

    @app.get("/control/batch")
    async def accounting() -> Any:
        return batch.accounting()

    async def _process(obj: dict[str, Any], lines: list[dict[str, Any]], problem: str | None) -> None:
        await asyncio.sleep(batch.validate_s)
        if problem is not None:
            obj["status"], obj["failed_at"] = "failed", int(time.time())
            obj["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": problem, "line": None}]}
            return
        if obj["status"] == "cancelling":
            obj["status"], obj["cancelled_at"] = "cancelled", int(time.time())
            return
        obj["status"], obj["in_progress_at"] = "in_progress", int(time.time())
        stop_at = len(lines) if batch.expire_after is None else int(batch.expire_after * len(lines))
        outputs: list[str] = []
        errors: list[str] = []
        step = batch.process_s / max(1, len(lines))
        for index, line in enumerate(lines):
            if obj["status"] == "cancelling" or index >= stop_at:
                break
            if step:
                await asyncio.sleep(step)
            custom_id = line["custom_id"]
            if batch._rng.random() < batch.fail_fraction:
                errors.append(json.dumps({"id": f"batch_req_{index}", "custom_id": custom_id, "response": {
                    "status_code": 500, "request_id": f"req_{index}",
                    "body": {"error": {"message": "The server had an error", "type": "server_error"}}}, "error": None}))
                obj["request_counts"]["failed"] += 1
                continue
            body = _answer(control, obj["endpoint"], line["body"])
            batch.answered += 1
            billed = batch.tokens.setdefault(body["model"], [0, 0])
            billed[0] += body["usage"]["prompt_tokens"]
            billed[1] += body["usage"]["completion_tokens"]
            outputs.append(json.dumps({"id": f"batch_req_{index}", "custom_id": custom_id, "response": {
                "status_code": 200, "request_id": f"req_{index}", "body": body}, "error": None}))
            obj["request_counts"]["completed"] += 1
        answered = {json.loads(o)["custom_id"] for o in outputs} | {json.loads(e)["custom_id"] for e in errors}
        if obj["status"] == "cancelling":
            final = "cancelled"
        elif stop_at < len(lines):
            final = "expired"
            for line in lines:
                if line["custom_id"] not in answered:
                    errors.append(json.dumps({"id": None, "custom_id": line["custom_id"], "response": None,
                                              "error": {"code": "batch_expired",
                                                        "message": "This request could not be executed before the "
                                                        "completion window expired."}}))
        else:
            final = "completed"
        obj["status"], obj["finalizing_at"] = "finalizing", int(time.time())
        await asyncio.sleep(batch.finalize_s)
        if outputs:
            obj["output_file_id"] = store.add_file(("\n".join(outputs) + "\n").encode(), "output.jsonl",
                                                   "batch_output")["id"]
        if errors:
            obj["error_file_id"] = store.add_file(("\n".join(errors) + "\n").encode(), "errors.jsonl",
                                                  "batch_output")["id"]
        obj["status"] = final
        obj[f"{final}_at"] = int(time.time())


def _parse_input(content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], str | None]:
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    for number, raw in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            return [], f"line {number} is not JSON"
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            return [], f"line {number} has no custom_id"
        if line["custom_id"] in seen:
            return [], f"line {number}: duplicate custom_id {line['custom_id']!r}"
        if line.get("method") != "POST" or line.get("url") != endpoint:
            return [], f"line {number}: method must be POST and url {endpoint}"
        if not isinstance(line.get("body"), dict):
            return [], f"line {number} has no body"
        seen.add(line["custom_id"])
        models.add(str(line["body"].get("model")))
        lines.append(line)
    if len(models) > 1:
        return [], "a batch may only hold requests for one model"
    if not lines:
        return [], "the input file is empty"
    return lines, None


def _answer(control: Control, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    model = str(body.get("model", ""))
    if endpoint == "/v1/chat/completions":
        prompt = "\n\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    else:
        prompt = str(body.get("prompt", ""))
    answer = control.answer_for(model, prompt)
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": max(1, len(answer.split()))}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    want = bool(body.get("logprobs"))
    k = int(body.get("top_logprobs") or (body.get("logprobs") if endpoint == "/v1/completions" else 0) or 0)
    pairs = control.logprobs_for(model, answer, k) if want else None
    first = (answer.split() or [""])[0]
    if endpoint == "/v1/chat/completions":
        logprobs = None
        if pairs:
            top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in pairs]
            logprobs = {"content": [{"token": first, "logprob": pairs[0][1], "bytes": list(first.encode()),
                                     "top_logprobs": top}], "refusal": None}
        choice = {"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None},
                  "logprobs": logprobs, "finish_reason": "stop"}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": answer, "logprobs": None, "finish_reason": "stop"}
        obj = "text_completion"
    return {"id": "cmpl-batch", "object": obj, "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage}


def create_batch_app(control: Control | None = None, batch: BatchControl | None = None) -> FastAPI:
    control = control or Control()
    app = create_app(control)
    add_batch_routes(app, control, batch or BatchControl())
    return app


@dataclass
class BatchServer:
    """The batch provider, in a thread (:func:`run_batch_server`) or a child process (:func:`start_batch_server`)."""

    port: int
    control: Control | None = None
    batch: BatchControl | None = None
    process: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def configure(self, **settings: Any) -> None:
        self._call("/control/batch", settings)

    def accounting(self) -> dict[str, Any]:
        return self._call("/control/batch")

    def sync_requests(self) -> list[dict[str, Any]]:
        return self._call("/control/log")["requests"]


@contextlib.contextmanager
def run_batch_server(**settings: Any) -> Iterator[BatchServer]:
    """The batch provider under uvicorn in a daemon thread on a free port."""
    control, batch = Control(), BatchControl()
    batch.configure(**settings)
    config = uvicorn.Config(create_batch_app(control, batch), host="127.0.0.1", port=0, log_level="critical",
                            lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="openai-batch-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test batch server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield BatchServer(port, control, batch)
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@contextlib.contextmanager
def start_batch_server(**settings: Any) -> Iterator[BatchServer]:
    """The batch provider as a child process (it outlives a client that is killed)."""
    import subprocess

    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--settings", json.dumps(settings)]
    process = subprocess.Popen(cmd)
    server = BatchServer(port, process=process)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                server.accounting()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the test batch server process did not start") from None
                time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible batch test server (127.0.0.1 only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--settings", default="{}", help='JSON, e.g. {"process_s": 1, "fail_fraction": 0.1}')
    args = parser.parse_args(argv)
    control, batch = Control(), BatchControl()
    batch.configure(**json.loads(args.settings))
    uvicorn.run(create_batch_app(control, batch), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
