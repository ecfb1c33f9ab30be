"""A small, real OpenAI-compatible server for tests: FastAPI + uvicorn on 127.0.0.1.

It speaks ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` in the OpenAI format, with
``usage`` and, when asked, first-token logprobs. Answers are a deterministic function of
(model, prompt); the prompt of a chat request is its message contents joined by a blank line, which
is exactly what ``OpenAIBackend`` sends to ``/completions`` (system first), so both APIs see the same.

A :class:`Control` object (in-process) or ``POST /control`` (subprocess) tells it to misbehave:
answer 429 with ``Retry-After``, 5xx, be slow, drop the connection, send malformed JSON, garbage, a
body without choices, an answer whose content is null, empty or a JSON object, or a refusal — for the next N requests or a seeded fraction of them. Every request is logged
with ``paid`` = it was answered with a completion (what a provider would bill), in memory and, with
``--log FILE``, as JSON lines flushed one by one so the log survives a crash of the client.

In-process::

    with run_server() as srv:           # background thread, free port
        srv.control.set_answers({"2+2?": "4"})
        srv.control.add_fault("rate_limit", count=1, retry_after="1")
        ... OpenAIBackend({"m": EndpointConfig("m", base_url=srv.base_url)}) ...
        srv.control.log

As a subprocess (survives killing the client)::

    python tests/openai_server.py --port 8123 --log /tmp/requests.jsonl --answers answers.json
    with start_server_process(log_path=...) as proc: ...   # picks a free port, waits until ready
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

FAULT_KINDS = ("rate_limit", "error", "slow", "drop", "malformed", "garbage", "no_choices")
# A 200 with a well-formed body whose answer is no answer: content null, "", or a JSON object (text on
# /completions). Billed like any answer.
CONTENT_FAULTS = {"null_content": None, "empty_content": "", "object_content": {"answer": "yes", "nested": [1, 2]}}
FAULT_KINDS += (*CONTENT_FAULTS, "refusal")  # refusal: content null with a "refusal" message (chat)
LOGPROB_MODES = ("ok", "omit", "reject")

AnswerFn = Callable[[str, str], str]


def default_answer(model: str, prompt: str) -> str:
    """Deterministic: 'yes' or 'no' from a hash of the prompt (the same for every model)."""
    return "yes" if hashlib.sha256(prompt.encode()).digest()[0] % 2 else "no"


@dataclass
class Fault:
    """One way to misbehave. Applies to the next ``count`` matching requests, or (``fraction``) to each
    matching request with that probability from a ``seed``-ed generator; ``model``/``endpoint`` narrow
    what matches ("chat" or "completions")."""

    kind: str
    count: int | None = None
    fraction: float | None = None
    seed: int = 0
    status: int = 500  # for "error"; for "rate_limit", 402 means an "insufficient_quota" 429
    retry_after: str | None = None  # for "rate_limit": seconds or an HTTP date
    delay_s: float = 2.0  # for "slow": then answer normally
    model: str | None = None
    endpoint: str | None = None
    _rng: random.Random = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {self.kind!r}")
        if self.count is None and self.fraction is None:
            self.count = 1
        self._rng = random.Random(self.seed)

    def fires(self, model: str, endpoint: str) -> bool:
        if (self.model and self.model != model) or (self.endpoint and self.endpoint != endpoint):
            return False
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
            return True
        return self._rng.random() < (self.fraction or 0.0)


class Control:
    """What the server answers and how it misbehaves; thread-safe; read the request log from here."""

    def __init__(self, log_path: str | Path | None = None):
        self._lock = threading.Lock()
        self._log_path = Path(log_path) if log_path else None
        self.reset()

    def reset(self) -> None:
        """Back to well-behaved defaults with an empty log (the log file, if any, is kept).

        Requests still in flight from before (a slow one, say) are left out of the new log and counters.
        """
        with self._lock:
            self.generation = getattr(self, "generation", 0) + 1
            self.answers: Mapping[str, str] | AnswerFn = default_answer
            self.top_logprobs: dict[str, list[tuple[str, float]]] = {}
            self.logprob_modes: dict[str, str] = {}
            self.api_key: str | None = None
            self.delay_s = 0.0
            self.faults: list[Fault] = []
            self.log: list[dict[str, Any]] = []
            self.in_flight = 0
            self.max_in_flight = 0

    # -------------------------------------------------------------------- configuration
    def set_answers(self, answers: Mapping[str, str] | AnswerFn) -> None:
        """A dict prompt -> answer (looked up by the full prompt, then its last paragraph), or f(model, prompt)."""
        self.answers = answers

    def set_top_logprobs(self, model: str, pairs: list[tuple[str, float]]) -> None:
        self.top_logprobs[model] = list(pairs)

    def set_logprobs_mode(self, model: str, mode: str) -> None:
        """'ok' (default), 'omit' (never include logprobs) or 'reject' (400 when asked for them)."""
        if mode not in LOGPROB_MODES:
            raise ValueError(f"mode must be one of {LOGPROB_MODES}")
        self.logprob_modes[model] = mode

    def require_api_key(self, key: str | None) -> None:
        """Answer 401 (echoing the wrong key, as careless providers do) unless ``Bearer key`` is sent."""
        self.api_key = key

    def add_fault(self, kind: str, **options: Any) -> Fault:
        fault = Fault(kind, **options)
        with self._lock:
            self.faults.append(fault)
        return fault

    # -------------------------------------------------------------------- reading
    @property
    def paid(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.log if e["paid"]]

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.log)

    # -------------------------------------------------------------------- used by the app
    def answer_for(self, model: str, prompt: str, params: Mapping[str, Any] | None = None) -> str:
        """The answer; a callable taking a third argument also gets the request's sampling parameters
        (``temperature``, ``seed``, ``max_tokens``, ...), to answer differently per sample."""
        answers = self.answers
        if callable(answers):
            import inspect

            try:
                takes_params = len(inspect.signature(answers).parameters) >= 3
            except (TypeError, ValueError):
                takes_params = False
            return answers(model, prompt, dict(params or {})) if takes_params else answers(model, prompt)
        if prompt in answers:
            return answers[prompt]
        last = prompt.rsplit("\n\n", 1)[-1]
        return answers.get(last, default_answer(model, prompt))

    def logprobs_for(self, model: str, answer: str, k: int) -> list[tuple[str, float]]:
        pairs = self.top_logprobs.get(model)
        if pairs is None:
            first = (answer.split() or [""])[0]
            pairs = [(first, -0.05), (first + "_alt", -3.0), ("other", -4.5)]
        return sorted(pairs, key=lambda p: p[1], reverse=True)[:k]

    def pick_fault(self, model: str, endpoint: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.fires(model, endpoint):
                    return fault
        return None

    def enter(self) -> int:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.generation

    def leave(self, entry: dict[str, Any], generation: int) -> None:
        with self._lock:
            if generation == self.generation:
                self.in_flight -= 1
                entry["seq"] = len(self.log)
                self.log.append(entry)
            if self._log_path:
                with self._log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(entry) + "\n")
                    f.flush()


def _error(status: int, message: str, kind: str = "invalid_request_error", **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status_code=status, headers=headers)


class _Dropped(Exception):
    """Raised mid-body on purpose: uvicorn then closes the connection without finishing the response."""


async def _half_then_drop() -> Any:
    yield b'{"id": "cmpl-dropped", "choices": ['
    await asyncio.sleep(0.01)
    raise _Dropped("connection dropped on purpose")


async def _sse(endpoint: str, model: str, answer: str, usage: dict[str, int], body: dict[str, Any]) -> Any:
    """The answer streamed word by word as server-sent events, usage last when asked for."""
    words = answer.split(" ")
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        if endpoint == "chat":
            choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
        else:
            choice = {"index": 0, "text": piece, "finish_reason": None}
        yield f"data: {json.dumps({'id': 'cmpl-s', 'object': 'chunk', 'model': model, 'choices': [choice]})}\n\n".encode()
    if (body.get("stream_options") or {}).get("include_usage"):
        yield f"data: {json.dumps({'id': 'cmpl-s', 'object': 'chunk', 'model': model, 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


def create_app(control: Control) -> FastAPI:
    app = FastAPI(title="smartmix test provider")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = sorted(set(control.top_logprobs) | set(control.logprob_modes) | {"test-model"})
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "test"} for n in names]}

    @app.post("/v1/chat/completions")
    async def chat(req: HTTPRequest) -> Response:
        return await _serve(req, "chat")

    @app.post("/v1/completions")
    async def completions(req: HTTPRequest) -> Response:
        return await _serve(req, "completions")

    @app.post("/control")
    async def control_endpoint(req: HTTPRequest) -> dict[str, Any]:
        """{"action": "reset" | "fault" | "answers" | "logprobs" | "logprobs_mode" | "api_key" | "delay", ...}"""
        cmd = await req.json()
        action = cmd.pop("action")
        if action == "reset":
            control.reset()
        elif action == "fault":
            control.add_fault(cmd.pop("kind"), **cmd)
        elif action == "answers":
            control.set_answers(cmd["answers"])
        elif action == "logprobs":
            control.set_top_logprobs(cmd["model"], [tuple(p) for p in cmd["pairs"]])
        elif action == "logprobs_mode":
            control.set_logprobs_mode(cmd["model"], cmd["mode"])
        elif action == "api_key":
            control.require_api_key(cmd["key"])
        elif action == "delay":
            control.delay_s = float(cmd["seconds"])
        else:
            return {"ok": False, "error": f"unknown action {action!r}"}
        return {"ok": True}

    @app.get("/control/log")
    async def control_log() -> dict[str, Any]:
        return {"requests": control.requests(), "max_in_flight": control.max_in_flight}

    async def _serve(req: HTTPRequest, endpoint: str) -> Response:
        generation = control.enter()
        entry: dict[str, Any] = {"t": time.time(), "endpoint": endpoint, "paid": False}
        try:
            return await _answer(req, endpoint, entry)
        finally:
            entry["t_done"] = time.time()
            control.leave(entry, generation)

    async def _answer(req: HTTPRequest, endpoint: str, entry: dict[str, Any]) -> Response:
        try:
            body = await req.json()
        except ValueError:
            entry["outcome"] = "bad_json"
            return _error(400, "request body is not JSON")
        model = str(body.get("model", ""))
        if endpoint == "chat":
            prompt = "\n\n".join(str(m.get("content", "")) for m in body.get("messages", []))
            want = bool(body.get("logprobs"))
            k = int(body.get("top_logprobs") or 0)
        else:
            prompt = str(body.get("prompt", ""))
            want = body.get("logprobs") is not None
            k = int(body.get("logprobs") or 0)
        entry.update(model=model, prompt=prompt, logprobs=want, params={
            key: body[key] for key in ("temperature", "max_tokens", "max_completion_tokens", "top_logprobs", "seed")
            if key in body
        })

        if control.api_key is not None:
            sent = req.headers.get("authorization", "")
            if sent != f"Bearer {control.api_key}":
                entry.update(outcome="unauthorized", status=401)
                given = sent.removeprefix("Bearer ")
                return _error(401, f"Incorrect API key provided: {given}. You can find your API key at ...")

        fault = control.pick_fault(model, endpoint)
        kind = fault.kind if fault else None
        entry["fault"] = kind
        if control.delay_s:
            await asyncio.sleep(control.delay_s)
        if fault and kind == "rate_limit":
            entry.update(outcome="rate_limit", status=429)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if fault.status == 402:  # stands for OpenAI's "insufficient_quota", which comes as a 429
                return JSONResponse({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                                               "code": "insufficient_quota"}}, status_code=429, headers=headers)
            return _error(429, "Rate limit reached, slow down", "requests", **headers)
        if fault and kind == "error":
            entry.update(outcome="error", status=fault.status)
            return _error(fault.status, "The server had an error while processing your request", "server_error")
        if fault and kind == "slow":
            await asyncio.sleep(fault.delay_s)
        if fault and kind == "drop":
            entry.update(outcome="drop", status=200)
            return StreamingResponse(_half_then_drop(), media_type="application/json")

        mode = control.logprob_modes.get(model, "ok")
        if want and mode == "reject":
            entry.update(outcome="rejected_logprobs", status=400)
            return JSONResponse(
                {"error": {"message": "logprobs is not supported for this model", "type": "invalid_request_error",
                           "param": "logprobs", "code": None}},
                status_code=400,
            )

        answer = control.answer_for(model, prompt, entry["params"])
        # A provider bills what it computed, whether or not the client can read it.
        entry.update(paid=True, answer=answer, status=200)
        if fault and kind == "malformed":
            entry["outcome"] = "malformed"
            return Response(b'{"id": "cmpl-x", "choices": [{"message": {"content": ', media_type="application/json")
        if fault and kind == "garbage":
            entry["outcome"] = "garbage"
            return Response(b"<html><body>502 Bad Gateway</body></html>", media_type="text/html")
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": max(1, len(answer.split())),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if fault and kind == "no_choices":
            entry["outcome"] = "no_choices"
            return JSONResponse({"id": "cmpl-x", "object": "chat.completion", "usage": usage})

        if fault and kind == "refusal":
            entry["outcome"] = "refusal"
            choice = {"index": 0, "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
                      "finish_reason": "stop"}
            return JSONResponse({"id": f"cmpl-{len(control.log)}", "object": "chat.completion", "model": model,
                                 "choices": [choice], "usage": usage})
        if fault and kind in CONTENT_FAULTS:
            entry["outcome"] = kind
            odd = CONTENT_FAULTS[kind]
            if endpoint == "chat":
                choice = {"index": 0, "message": {"role": "assistant", "content": odd}, "finish_reason": "stop"}
            else:
                choice = {"index": 0, "text": odd, "finish_reason": "stop"}
            return JSONResponse({"id": f"cmpl-{len(control.log)}", "object": "chat.completion", "model": model,
                                 "choices": [choice], "usage": usage})

        entry["outcome"] = "slow_ok" if kind == "slow" else "ok"
        if body.get("stream"):
            return StreamingResponse(_sse(endpoint, model, answer, usage, body), media_type="text/event-stream")
        pairs = control.logprobs_for(model, answer, k) if want and mode == "ok" else None
        first = (answer.split() or [""])[0]
        if endpoint == "chat":
            logprobs = None
            if pairs is not None:
                top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in pairs]
                logprobs = {"content": [{"token": first, "logprob": pairs[0][1] if pairs else 0.0,
                                         "bytes": list(first.encode()), "top_logprobs": top}], "refusal": None}
            choice = {"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None},
                      "logprobs": logprobs, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            logprobs = None
            if pairs is not None:
                logprobs = {"tokens": [first], "token_logprobs": [pairs[0][1] if pairs else 0.0],
                            "top_logprobs": [dict(pairs)], "text_offset": [0]}
            choice = {"index": 0, "text": answer, "logprobs": logprobs, "finish_reason": "stop"}
            obj = "text_completion"
        return JSONResponse({
            "id": f"cmpl-{len(control.log)}", "object": obj, "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage,
        })

    return app


# ------------------------------------------------------------------------------------ running it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    control: Control
    port: int
    thread: threading.Thread = field(repr=False)
    server: uvicorn.Server = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@contextlib.contextmanager
def run_server(control: Control | None = None, *, log_level: str = "critical") -> Iterator[RunningServer]:
    """Run the app under uvicorn on 127.0.0.1:<free port> in a daemon thread; stop it on exit."""
    control = control or Control()
    config = uvicorn.Config(
        create_app(control), host="127.0.0.1", port=0, log_level=log_level, lifespan="off",
        timeout_graceful_shutdown=1, access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="openai-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test OpenAI server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(control, port, thread, server)
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@dataclass
class ServerProcess:
    """The server in a child process (see :func:`start_server_process`)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path | None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def control(self, action: str, **fields: Any) -> dict[str, Any]:
        data = json.dumps({"action": action, **fields}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/control", data=data,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def requests(self) -> list[dict[str, Any]]:
        """The log file's entries (it survives the server), else the live log."""
        if self.log_path and self.log_path.exists():
            return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/control/log", timeout=5) as resp:
            return json.loads(resp.read())["requests"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def start_server_process(
    *, log_path: str | Path | None = None, answers: Mapping[str, str] | None = None,
    faults: list[dict[str, Any]] | None = None, api_key: str | None = None, delay_s: float = 0.0,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """Run ``python tests/openai_server.py`` as a child process on a free port; wait until it answers."""
    port = port or free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(port)]
    if log_path:
        cmd += ["--log", str(log_path)]
    if answers:
        cmd += ["--answers-json", json.dumps(dict(answers))]
    for fault in faults or []:
        cmd += ["--fault", json.dumps(fault)]
    if api_key:
        cmd += ["--api-key", api_key]
    if delay_s:
        cmd += ["--delay", str(delay_s)]
    proc = ServerProcess(subprocess.Popen(cmd), port, Path(log_path) if log_path else None)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1):
                    break
            except OSError:
                if proc.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the test OpenAI server process did not start") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test server (127.0.0.1 only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", help="append every request as a JSON line here (flushed per request)")
    parser.add_argument("--answers", help="JSON file: {prompt: answer}")
    parser.add_argument("--answers-json", help="the same, inline")
    parser.add_argument("--fault", action="append", default=[], help='JSON, e.g. {"kind": "error", "count": 2}')
    parser.add_argument("--api-key", help="require this bearer key")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before every answer")
    args = parser.parse_args(argv)
    control = Control(args.log)
    if args.answers:
        control.set_answers(json.loads(Path(args.answers).read_text()))
    if args.answers_json:
        control.set_answers(json.loads(args.answers_json))
    for spec in args.fault:
        spec = json.loads(spec)
        control.add_fault(spec.pop("kind"), **spec)
    control.require_api_key(args.api_key)
    control.delay_s = args.delay
    uvicorn.run(create_app(control), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


__all__ = [
    "Control", "Fault", "RunningServer", "ServerProcess", "create_app", "default_answer", "free_port",
    "run_server", "start_server_process",
]

if __name__ == "__main__":
    main()
