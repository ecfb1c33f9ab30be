"""Run a GGUF model behind llama.cpp's OpenAI-compatible HTTP server, in a child process.

The server is xllamacpp's build of llama.cpp's ``llama-server`` (``/v1/completions``,
``/v1/chat/completions``, ``/v1/models``, with logprobs). Each model gets its own process (started as
``python -m smartmix.demo.llama_server --model ... --port ...``) in its own process group, bound to
127.0.0.1, so that one thread per model really is one core and a crash of the C++ code cannot take the
caller down.

No server outlives its owner: ``LlamaServer`` stops it on ``__exit__`` (also on Ctrl-C and exceptions), an
``atexit`` hook kills every server still running when the interpreter exits, and the child itself exits
within half a second of its parent's death (even a ``kill -9``).

    with LlamaServer(path, "smollm2-135m") as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="none")
        await client.completions.create(model=server.name, prompt=..., max_tokens=1, logprobs=5)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from smartmix.errors import ConfigError, MissingExtraError, ProviderError

__all__ = ["LlamaServer", "first_token_top_logprobs", "main"]

_READY_PATH = "/v1/models"
_BIND_ERROR_MARK = "couldn't bind"
_EXIT_NO_XLLAMACPP = 4
_EXIT_INIT_FAILED = 3

# pid -> (process, its temporary log file or None), for the atexit safety net
_LIVE: dict[int, tuple[subprocess.Popen[bytes], Path | None]] = {}
_LIVE_LOCK = threading.Lock()


class LlamaServer:
    """One llama.cpp server for one GGUF model, as a context manager.

    ``port=None`` picks a free port. ``n_threads`` threads for generation and prompt processing (the child
    also gets ``OMP_WAIT_POLICY=PASSIVE`` so idle threads do not spin). ``swa_full=True`` is needed for
    Gemma 3 (sliding-window attention), otherwise the shared few-shot prefix cannot be reused and it runs
    about 4x slower. ``ctx`` is the total context size, shared by the ``n_parallel`` slots.
    ``cache_ram_mib=0`` (always) turns off the host-RAM prompt cache; the per-slot prefix reuse stays on.
    ``n_parallel=1`` measured best with one thread (more slots cost CPU per request). The server's log
    (warnings and errors; everything with ``verbose=True``) goes to a temporary file, or to ``log_path``
    (then kept); :meth:`log_tail` reads it and every error message quotes it.

    After :meth:`start` (or ``__enter__``): :attr:`base_url` (``http://127.0.0.1:PORT/v1``, for the openai
    SDK), :attr:`url` (without ``/v1``), :attr:`port`, :attr:`pid`, :attr:`startup_s`. The model answers
    to the name ``name`` in requests and in ``/v1/models``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        name: str,
        port: int | None = None,
        n_threads: int = 1,
        swa_full: bool = False,
        ctx: int = 2048,
        n_parallel: int = 1,
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
        log_path: str | os.PathLike[str] | None = None,
        verbose: bool = False,
    ):
        if n_threads < 1:
            raise ConfigError(f"n_threads must be at least 1, got {n_threads}.")
        if n_parallel < 1:
            raise ConfigError(f"n_parallel must be at least 1, got {n_parallel}.")
        if ctx < 64:
            raise ConfigError(f"ctx (context size) must be at least 64 tokens, got {ctx}.")
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"port must be between 1 and 65535, got {port}.")
        self.model_path = Path(model_path)
        self.name = name
        self.requested_port = port
        self.n_threads = n_threads
        self.swa_full = swa_full
        self.ctx = ctx
        self.n_parallel = n_parallel
        self.host = host
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self._keep_log = log_path is not None
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.port: int | None = None
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    # ------------------------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        if self.port is None:
            raise ProviderError(
                f"The llama server for '{self.name}' is not started; use it as a context manager."
            )
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL: pass it to ``OpenAI(base_url=..., api_key="none")``."""
        return self.url + "/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"LlamaServer(name={self.name!r}, port={self.port}, pid={self.pid}, {state})"

    def start(self) -> LlamaServer:
        """Start the child process and wait until ``/v1/models`` answers. Idempotent while alive."""
        if self.alive():
            return self
        self._stopped = False
        if not self.model_path.is_file():
            raise ConfigError(
                f"Model file not found: {self.model_path}. "
                "Get the demo models with smartmix.demo.local_models.ensure_models()."
            )
        if _find_module("xllamacpp") is None:
            raise MissingExtraError("Running local models", "demo", "xllamacpp")
        attempts = 1 if self.requested_port is not None else 3
        for attempt in range(attempts):
            port = self.requested_port if self.requested_port is not None else _free_port(self.host)
            if self.requested_port is not None and not _port_free(self.host, port):
                raise ConfigError(
                    f"Port {port} on {self.host} is already in use, so the llama server for '{self.name}' "
                    "cannot listen there. Pick another port, or pass port=None to use a free one."
                )
            try:
                self._launch(port)
                return self
            except _PortTaken:
                if attempt == attempts - 1:
                    raise ConfigError(
                        f"Port {port} on {self.host} is already in use, so the llama server for '{self.name}' "
                        "cannot listen there. Pick another port, or pass port=None to use a free one."
                    ) from None
        return self  # pragma: no cover

    def alive(self) -> bool:
        """True while the server process runs (it may still be loading during :meth:`start`)."""
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`ProviderError` with the exit status and the server's last log lines if it died."""
        if self._proc is None:
            state = "was stopped" if self._stopped else "is not started"
            raise ProviderError(
                f"The llama server for '{self.name}' {state}; start it (use it as a context manager)."
            )
        code = self._proc.poll()
        if code is not None:
            raise ProviderError(self._death_message(code))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``timeout`` s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._stopped = True
            _terminate(proc, timeout)
            with _LIVE_LOCK:
                _LIVE.pop(proc.pid, None)
        if self.log_path is not None and not self._keep_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote (stdout and stderr together)."""
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 16384))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process (Linux only; None elsewhere or when stopped)."""
        if self._proc is None:
            return None
        try:
            with open(f"/proc/{self._proc.pid}/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the server process has used so far (Linux only; None elsewhere).

        Requests per CPU-second is a throughput figure that does not depend on what else the machine runs.
        """
        if self._proc is None:
            return None
        try:
            with open(f"/proc/{self._proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    # ------------------------------------------------------------------------------------ internals

    def _command(self, port: int) -> list[str]:
        cmd = [
            sys.executable, "-m", "smartmix.demo.llama_server",
            "--model", str(self.model_path), "--name", self.name,
            "--host", self.host, "--port", str(port),
            "--threads", str(self.n_threads), "--ctx", str(self.ctx), "--parallel", str(self.n_parallel),
            "--parent-pid", str(os.getpid()), "--verbosity", "3" if self.verbose else "2",
        ]  # fmt: skip
        if self.swa_full:
            cmd.append("--swa-full")
        if self.log_path is not None and not self._keep_log:
            cmd += ["--orphan-log", str(self.log_path)]
        return cmd

    def _launch(self, port: int) -> None:
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"smartmix-llama-{_safe(self.name)}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env["PYTHONPATH"] = os.pathsep.join(p for p in [_package_root(), env.get("PYTHONPATH", "")] if p)
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                self._command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=(os.name == "posix"),
            )
        with _LIVE_LOCK:
            _LIVE[proc.pid] = (proc, None if self._keep_log else self.log_path)
        self._proc = proc
        self.port = port
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0

    def _wait_ready(self, t0: float) -> None:
        assert self._proc is not None
        deadline = t0 + self.startup_timeout
        url = self.url + _READY_PATH
        delay = 0.02
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self.log_tail(40)
                if _BIND_ERROR_MARK in tail:
                    raise _PortTaken()
                raise ProviderError(self._death_message(code, during_start=True))
            try:
                with urllib.request.urlopen(url, timeout=2.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            if time.perf_counter() > deadline:
                tail = self.log_tail()
                raise ProviderError(
                    f"The llama server for '{self.name}' ({self.model_path}) did not answer {url} within "
                    f"{self.startup_timeout:.0f} s. Last lines of its log:\n{tail}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def _death_message(self, code: int, during_start: bool = False) -> str:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        when = "while starting" if during_start else "unexpectedly"
        hint = ""
        if code == _EXIT_NO_XLLAMACPP:
            hint = " xllamacpp is not importable in the child interpreter: python -m pip install xllamacpp."
        tail = self.log_tail()
        return (
            f"The llama server for '{self.name}' (pid {self.pid}, port {self.port}) {how} {when}.{hint} "
            f"Model: {self.model_path}. Last lines of its log:\n{tail}"
        )


class _PortTaken(Exception):
    pass


def first_token_top_logprobs(choice: Any) -> list[tuple[str, float]]:
    """The first generated token's alternatives as (token, logprob), most likely first.

    Accepts an openai SDK ``CompletionChoice`` / ``Choice`` or a plain dict. llama.cpp answers the
    completions endpoint with the chat-style layout (``logprobs.content[0].top_logprobs``, a list of
    ``{token, logprob}``) rather than the legacy one (``logprobs.top_logprobs[0]``, a dict token->logprob);
    both are understood. Returns ``[]`` when there are no logprobs.
    """
    lp = _get(choice, "logprobs")
    if lp is None:
        return []
    content = _get(lp, "content")
    if content:
        first = content[0]
        tops = _get(first, "top_logprobs") or []
        pairs = [(str(_get(t, "token")), float(_get(t, "logprob"))) for t in tops]
        if not pairs and _get(first, "token") is not None:
            pairs = [(str(_get(first, "token")), float(_get(first, "logprob")))]
    else:
        legacy = _get(lp, "top_logprobs")
        if not legacy:
            return []
        first = legacy[0] or {}
        pairs = [(str(k), float(v)) for k, v in dict(first).items()]
    pairs = [(t, v) for t, v in pairs if not math.isnan(v)]
    pairs.sort(key=lambda kv: kv[1], reverse=True)
    return pairs


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    value = getattr(obj, key, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(key)
    return value


# ---------------------------------------------------------------------------------------- process helpers


def _find_module(module: str) -> object | None:
    import importlib.util

    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def _package_root() -> str:
    """The folder holding the ``smartmix`` package, so the child imports the same code (src layout)."""
    return str(Path(__file__).resolve().parents[2])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if os.name == "posix":  # like the server: a port in TIME_WAIT is usable, a listening one is not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    posix = os.name == "posix"

    def signal_group(sig: int) -> None:
        try:
            if posix:
                os.killpg(proc.pid, sig)  # the child leads its own process group (start_new_session)
            else:  # pragma: no cover
                proc.kill() if sig == getattr(signal, "SIGKILL", None) else proc.terminate()
        except (ProcessLookupError, PermissionError):
            pass

    if proc.poll() is None:
        signal_group(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))
            proc.wait(timeout=timeout)
    else:
        # Already gone: still make sure nothing it might have spawned in its group survives.
        signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
        _LIVE.clear()
    for proc, log in procs:
        with contextlib.suppress(Exception):
            _terminate(proc, timeout=2.0)
        if log is not None:
            with contextlib.suppress(OSError):
                log.unlink()


# ---------------------------------------------------------------------------------------- child entry point


def main(argv: list[str] | None = None) -> int:
    """``python -m smartmix.demo.llama_server --model PATH --port N``: serve one model until killed."""
    parser = argparse.ArgumentParser(
        prog="python -m smartmix.demo.llama_server",
        description="Serve one GGUF model with llama.cpp's OpenAI-compatible HTTP server (xllamacpp).",
    )
    parser.add_argument("--model", required=True, help="path to the .gguf file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default=None, help="the model's name in requests and /v1/models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--swa-full", action="store_true")
    parser.add_argument("--verbosity", type=int, default=3, help="llama.cpp log level: 2 warnings, 3 info")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument(
        "--orphan-log", default=None, help="file to delete when exiting because the parent is gone"
    )
    args = parser.parse_args(argv)

    try:
        import xllamacpp
    except ImportError as exc:
        print(
            f"smartmix: cannot import xllamacpp ({exc}); install it with: python -m pip install xllamacpp",
            file=sys.stderr,
        )
        return _EXIT_NO_XLLAMACPP

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    if args.name:
        params.model_alias = {args.name}
    params.hostnames = [args.host]
    params.port = args.port
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cache_ram_mib = 0
    params.swa_full = bool(args.swa_full)
    params.verbosity = args.verbosity
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        print(f"smartmix: llama server failed to start: {exc}", file=sys.stderr, flush=True)
        return _EXIT_INIT_FAILED
    print(
        "smartmix: llama server ready "
        + json.dumps({"url": server.listening_address, "model": args.model, "pid": os.getpid()}),
        flush=True,
    )
    try:
        while True:  # the server runs on its own threads; this one only watches the parent
            if args.parent_pid is not None and os.getppid() != args.parent_pid:
                print(
                    "smartmix: parent process is gone, stopping the llama server", file=sys.stderr, flush=True
                )
                if args.orphan_log:
                    with contextlib.suppress(OSError):
                        os.unlink(args.orphan_log)
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip C++ destructors: nothing to save, and they can block on open connections


if __name__ == "__main__":
    sys.exit(main())
