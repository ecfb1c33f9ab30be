"""`smartmix serve` under garbage: does every call the upstream bills end up in the journal and the bill?

    python benchmarks/faults_serve.py [--requests 600] [--clients 50]

An OpenAI-compatible upstream on 127.0.0.1 (tests/openai_server.py, as a subprocess) that logs every
request it answers, with ``paid`` = it answered a completion (what a provider bills), answers a seeded
mix: good answers, HTML garbage, ``content: null``, ``content: ""``, a JSON object as content, and HTTP
500s. ``smartmix serve`` (the real command, a subprocess, journal on) sits in front of it with three
routes: a fixed cheap model, the reference, and a cascade whose cheap model is never confident enough
(every cascade request pays a cheap call, then the reference). N client requests, each with its own
prompt, go through it; then the server is stopped (SIGTERM, graceful) and the journal is read.

Reported (row schema shared with benchmarks/faults.py): paid calls at the upstream vs journal rows;
``bill_usd`` (the journal's total) vs ``server_usd`` (the upstream's paid calls priced from the usage it
reported; HTML garbage reports none, so neither side can price it); ``paid_twice`` = a good answer paid
more than once for the same prompt and model; ``items_lost`` = client requests that got no HTTP answer,
or a 200 whose answer is not non-blank text, plus paid calls missing from the journal;
``items_duplicated`` = journal rows beyond the upstream's paid calls. ``smartmix serve`` has no cost cap:
``cap_overshoot_usd`` is 0 by construction. Writes benchmarks/results/faults_serve.md when run alone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the counting upstream

KEY = "faults-serve-key"
PRICES = {"cheap": (0.1, 0.4), "big": (5.0, 15.0)}  # USD per million tokens
FAULTS = [  # each request independently, in this order; seeded
    {"kind": "garbage", "fraction": 0.05, "seed": 1},
    {"kind": "null_content", "fraction": 0.06, "seed": 2},
    {"kind": "empty_content", "fraction": 0.04, "seed": 3},
    {"kind": "object_content", "fraction": 0.06, "seed": 4},
    {"kind": "error", "fraction": 0.06, "seed": 5, "status": 500},
]


def code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process on port {port} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _job(base_url: str, journal: Path) -> str:
    models = "".join(
        f'[models.{name}]\nbase_url = "{base_url}"\ninput_price = {p_in}\noutput_price = {p_out}\n'
        "max_attempts = 4\nmax_concurrency = 64\n"
        for name, (p_in, p_out) in PRICES.items()
    )
    return (
        f'reference = "big"\n{models}'
        '[routes.auto]\ntype = "cascade"\nchain = ["cheap"]\nthreshold = 0.99\n'
        f'[server]\nkeys_env = "SMARTMIX_FAULTS_KEYS"\njournal = "{journal}"\n'
    )


async def _send_all(url: str, n: int, clients: int) -> list[dict[str, Any]]:
    import httpx

    routes = ("cheap", "big", "auto")
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    replies: list[dict[str, Any]] = []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {"model": routes[i % 3], "messages": [{"role": "user", "content": f"request {i}: yes or no?"}]}
                try:
                    r = await http.post(url, json=body)
                except Exception as exc:  # noqa: BLE001 - a lost request is what this counts
                    replies.append({"i": i, "status": None, "error": type(exc).__name__})
                    continue
                reply: dict[str, Any] = {"i": i, "status": r.status_code}
                if r.status_code == 200:
                    data = r.json()
                    reply["answer"] = data["choices"][0]["message"]["content"]
                    reply["cost"] = data["smartmix"]["cost_usd"]
                replies.append(reply)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return replies


def _priced(entry: dict[str, Any]) -> float:
    """What the upstream billed for one paid call, from the usage it reported (none for HTML garbage)."""
    if entry.get("outcome") == "garbage":
        return 0.0
    p_in, p_out = PRICES[entry["model"]]
    prompt_tokens = len(entry["prompt"].split())
    completion_tokens = max(1, len(str(entry.get("answer", "")).split()))
    return (prompt_tokens * p_in + completion_tokens * p_out) * 1e-6


def run_serve_garbage(n_requests: int = 600, clients: int = 50) -> dict[str, Any]:
    """One scenario row (schema of benchmarks/faults.py): serve under a mix of good and odd answers."""
    from openai_server import start_server_process

    from smartmix.journal import Journal

    tmp = Path(tempfile.mkdtemp(prefix="smartmix-faults-serve-"))
    log_path, journal_path = tmp / "upstream.jsonl", tmp / "serve.sqlite"
    port = _free_port()
    with start_server_process(log_path=log_path, faults=FAULTS) as upstream:
        upstream.control("logprobs", model="cheap", pairs=[["yes", -0.69], ["no", -0.75]])  # never confident
        (tmp / "job.toml").write_text(_job(upstream.base_url, journal_path))
        env = dict(os.environ, SMARTMIX_FAULTS_KEYS=KEY, LITELLM_LOCAL_MODEL_COST_MAP="True")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
        server = subprocess.Popen(
            [sys.executable, "-m", "smartmix.cli", "serve", "--config", str(tmp / "job.toml"), "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            _wait_port(port, server)
            t0 = time.monotonic()
            replies = asyncio.run(_send_all(f"http://127.0.0.1:{port}/v1/chat/completions", n_requests, clients))
            elapsed = time.monotonic() - t0
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                _, stderr = server.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                _, stderr = server.communicate()
        paid = [e for e in upstream.requests() if e.get("paid")]
    with Journal(journal_path) as journal:
        runs = journal.runs()
        rows = [c for r in runs for c in journal.calls(r.run_id)]
    good = collections.Counter((e["prompt"], e["model"]) for e in paid if e.get("outcome") == "ok")
    ok = [r for r in replies if r["status"] == 200]
    silently_wrong = [r for r in ok if not isinstance(r.get("answer"), str) or not r["answer"].strip()]
    no_answer = [r for r in replies if r["status"] is None]
    statuses = collections.Counter(r["status"] for r in replies)
    outcomes = collections.Counter(e.get("outcome") for e in paid)
    missing = max(0, len(paid) - len(rows))
    bill = sum(c["cost_usd"] for c in rows)
    told = sum(r["cost"] for r in ok)
    tracebacks = stderr.decode(errors="replace").count("Traceback")
    notes = (
        f"{n_requests} requests, {clients} clients, {elapsed:.1f} s; replies {dict(sorted(statuses.items(), key=str))}; "
        f"upstream paid answers {dict(sorted(outcomes.items()))}; clients were told ${told:.6f} in total "
        f"(the rest of the bill: calls paid for requests that failed after max_attempts); "
        f"{len(silently_wrong)} 200s without a text answer; {tracebacks} tracebacks on the server's stderr; "
        "server_usd leaves out HTML garbage (it reports no usage; neither side can price it); serve has no cost cap"
    )
    return {
        "scenario": "serve_garbage",
        "paid_twice": sum(n - 1 for n in good.values() if n > 1),
        "items_lost": len(no_answer) + len(silently_wrong) + missing,
        "items_duplicated": max(0, len(rows) - len(paid)),
        "bill_usd": round(bill, 9),
        "server_usd": round(sum(_priced(e) for e in paid), 9),
        "cap_overshoot_usd": 0.0,
        "journal_rows": len(rows),
        "server_paid_calls": len(paid),
        "notes": notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "faults_serve.md")
    args = parser.parse_args()
    row = run_serve_garbage(args.requests, args.clients)
    keys = [k for k in row if k != "notes"]
    lines = [
        f"Command: `python benchmarks/faults_serve.py --requests {args.requests} --clients {args.clients}`",
        "",
        f"Code version: {code_version()}",
        "",
        "| " + " | ".join(keys) + " |",
        "| " + " | ".join("---" for _ in keys) + " |",
        "| " + " | ".join(str(row[k]) for k in keys) + " |",
        "",
        f"Notes: {row['notes']}.",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
