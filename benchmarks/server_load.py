"""Load test of `smartmix serve` on loopback: requests/s, added latency over calling the upstream directly.

    python benchmarks/server_load.py --seconds 60 --clients 200

Three processes on this machine: a minimal OpenAI-compatible upstream (answers at once), the smartmix
server in front of it (route: a fixed model), and this load generator (asyncio + httpx, N concurrent
clients, each sending chat completions back to back). The same load runs first against the upstream
directly, then through smartmix; added latency = smartmix's percentile minus the direct one. Any non-200
answer or transport error counts as an error. Also reported: the CPU time each process spent per request
(Linux /proc), which says what the proxy itself costs whatever the load generator manages to send.
Writes benchmarks/results/server_load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UPSTREAM = r'''
import json, sys
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while True:
        msg = await receive()
        if not msg.get("more_body"):
            break
    body = json.dumps({"id": "c", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
'''


def code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measured(url: str, clients: int, seconds: float, key: str | None, pids: dict[str, int], warmup: float = 0.0) -> dict:
    """:func:`load`, plus the CPU milliseconds per request of this load generator and of ``pids``; after
    ``warmup`` seconds of the same load, not counted (connections opened, lazy imports done)."""
    if warmup > 0:
        asyncio.run(load(url, clients, warmup, key))
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own = own_cpu_seconds()
    result = asyncio.run(load(url, clients, seconds, key))
    n = max(1, result["requests"] + result["errors"])
    result["cpu_ms"] = {"load generator": (own_cpu_seconds() - own) / n * 1000}
    for name, pid in pids.items():
        after = cpu_seconds(pid)
        if before[name] is not None and after is not None:
            result["cpu_ms"][name] = (after - before[name]) / n * 1000
    return result


async def load(url: str, clients: int, seconds: float, key: str | None) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    payload = {"model": "fixed", "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 1}
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, json=payload, headers=headers)
                    ok = r.status_code == 200
                except Exception:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.monotonic() - t0
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {
        "requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99), "mean_ms": statistics.fmean(latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of uncounted load before each measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "server_load.md")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp())
    up_port, sm_port = free_port(), free_port()
    (tmp / "upstream.py").write_text(UPSTREAM)
    key = "bench-client-key"
    (tmp / "job.toml").write_text(
        f'reference = "fixed"\n[models.fixed]\nbase_url = "http://127.0.0.1:{up_port}/v1"\n'
        # a proxy in front of a local server: let every client's request be in flight at once
        f'input_price = 1.0\noutput_price = 2.0\nmax_concurrency = {max(16, args.clients * 2)}\n'
        '[server]\nkeys_env = "SMARTMIX_BENCH_KEYS"\n'
    )
    env = dict(os.environ, SMARTMIX_BENCH_KEYS=key)
    procs = [subprocess.Popen([sys.executable, str(tmp / "upstream.py"), str(up_port)])]
    try:
        wait_port(up_port)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "smartmix.cli", "serve", "--config", str(tmp / "job.toml"), "--port", str(sm_port)],
            env=env, stdout=subprocess.DEVNULL,
        ))
        wait_port(sm_port)
        direct = measured(f"http://127.0.0.1:{up_port}/v1/chat/completions", args.clients, args.seconds, None,
                          {"upstream": procs[0].pid}, args.warmup)
        routed = measured(f"http://127.0.0.1:{sm_port}/v1/chat/completions", args.clients, args.seconds, key,
                          {"upstream": procs[0].pid, "smartmix": procs[1].pid}, args.warmup)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    rows = [("upstream directly", direct), ("through smartmix", routed)]
    lines = [
        f"Command: `python benchmarks/server_load.py --seconds {args.seconds:g} --clients {args.clients} --warmup {args.warmup:g}`",
        "",
        f"Code version: {code_version()}",
        "",
        f"{args.clients} concurrent clients for {args.seconds:g} s each (after {args.warmup:g} s of uncounted warm-up), "
        "loopback, 2 cores shared by upstream, server and load generator; directly first, then through smartmix.",
        "",
        "| target | requests | errors | req/s | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['requests']:,} | {r['errors']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    lines += ["", f"Added latency: p50 {routed['p50_ms'] - direct['p50_ms']:+.1f} ms, p99 {routed['p99_ms'] - direct['p99_ms']:+.1f} ms."]
    names = ["load generator", "upstream", "smartmix"]
    lines += [
        "",
        "CPU time per request (ms), by process:",
        "",
        "| target | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for name, r in rows:
        cells = [f"{r['cpu_ms'][p]:.3f}" if p in r["cpu_ms"] else "—" for p in names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    print(json.dumps({"direct": direct, "smartmix": routed}))


if __name__ == "__main__":
    main()
