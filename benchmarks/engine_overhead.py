"""What smartmix's engine costs on top of the bare OpenAI client, against a loopback server that answers at once.

    python benchmarks/engine_overhead.py                      # 3,000 requests at concurrency 1, 64, 256
    python benchmarks/engine_overhead.py --requests 5000 --repeats 5

Two processes on this machine: the test provider (``tests/openai_server.py``, FastAPI + uvicorn, no delay,
no request log file) and this one. For each concurrency C the same K chat requests go to the same server:

- *bare*: ``openai.AsyncOpenAI(max_retries=0)``, ``chat.completions.create`` under an ``asyncio.Semaphore(C)``
  (what one would write by hand, with nothing recorded);
- *smartmix*: ``Engine.run(items, "reference")`` over ``OpenAIBackend`` with a fresh SQLite ``Journal``: per
  call the resume and cache look-ups, the per-model gate (concurrency, rate limiter), the retry wrapper,
  raw-JSON parsing, pricing, one committed journal row, the ledger; application chunks of 512 calls.

The two alternate ``--repeats`` times after a warm-up (taking turns to go first; the server's request log is
emptied before each measurement, as it slows the server down when it grows); the table shows the median wall time of each, and the
overhead is ``smartmix / bare - 1``, in wall time and in this process's CPU time (the client's work, which
is what smartmix adds; on a shared machine it is far steadier than wall time). Journal writes per second
are measured during the smartmix runs (rows committed / wall time) and alone (``Journal.record`` in a
loop, one commit per row). Writes benchmarks/results/engine_overhead.md with the command and the code version
(of the ``smartmix`` imported, so ``PYTHONPATH=other/src`` measures other code) at the top.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from openai_server import start_server_process  # noqa: E402

from smartmix.backends.openai_compat import EndpointConfig, OpenAIBackend  # noqa: E402
from smartmix.domain import Completion, Message, Request  # noqa: E402
from smartmix.engine import Engine, EngineOptions  # noqa: E402
from smartmix.journal import Journal  # noqa: E402
from smartmix.models import ModelSpec, Pool  # noqa: E402
from smartmix.policies import Guarantee  # noqa: E402
from smartmix.tasks import ExactComparator, Item, Template  # noqa: E402

MODEL = "bench-model"


def smartmix_path() -> str:
    import smartmix

    return str(Path(smartmix.__file__).parent)


def prompts(n: int, tag: str) -> list[str]:
    return [f"[{tag}] Is item {i} a positive review? Answer yes or no." for i in range(n)]


async def bare(base_url: str, texts: list[str], concurrency: int) -> tuple[float, float]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="no-key", max_retries=0, timeout=60)
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> str:
        async with gate:
            r = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=4, temperature=0
            )
            return r.choices[0].message.content

    try:
        t0, c0 = time.perf_counter(), time.process_time()
        answers = await asyncio.gather(*(one(t) for t in texts))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await client.close()
    assert all(a in ("yes", "no") for a in answers)
    return wall, cpu


async def through_smartmix(
    base_url: str, texts: list[str], concurrency: int, journal_path: Path
) -> tuple[float, float]:
    backend = OpenAIBackend({MODEL: EndpointConfig(MODEL, base_url=base_url, max_concurrency=concurrency)})
    pool = Pool([ModelSpec(MODEL, 1e-6, 2e-6)], MODEL)
    items = [Item(id=str(i), fields={"text": t}) for i, t in enumerate(texts)]
    with Journal(journal_path) as journal:
        journal.start_run("bench", {"bench": True}, 0)
        engine = Engine(
            backend, pool, Template(user="{text}"), ExactComparator(),
            options=EngineOptions(concurrency=concurrency, params={"max_tokens": 4}),
            journal=journal, run_id="bench",
        )
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            result = await engine.run(items, "reference", Guarantee(0.9, 0.95))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            await backend.aclose()
        assert not result.failures and len(journal.calls("bench")) == len(texts)
    return wall, cpu


class InstantBackend:
    """Answers at once, in-process: what is left of a run is smartmix's own work per call."""

    async def complete(self, request: Request) -> Completion:
        await asyncio.sleep(0)  # a real backend always yields to the loop at least once
        return Completion(request.model, "yes", input_tokens=12, output_tokens=1, latency_ms=0.0,
                          extra={"attempts": 1, "finish_reason": "stop", "elapsed_ms": 0.0})

    async def aclose(self) -> None:
        return None


def engine_only(n: int, concurrency: int, journal_path: Path | None) -> tuple[float, float]:
    """Wall and CPU seconds per call the engine itself spends (policy, template, budget, ledger, journal)."""
    items = [Item(id=str(i), fields={"text": t}) for i, t in enumerate(prompts(n, f"instant-{journal_path}"))]
    journal = None
    if journal_path is not None:
        journal = Journal(journal_path)
        journal.start_run("instant", {}, 0)
    engine = Engine(
        InstantBackend(), Pool([ModelSpec(MODEL, 1e-6, 2e-6)], MODEL), Template(user="{text}"), ExactComparator(),
        options=EngineOptions(concurrency=concurrency, params={"max_tokens": 4}), journal=journal, run_id="instant",
    )
    t0, c0 = time.perf_counter(), time.process_time()
    asyncio.run(engine.run(items, "reference", Guarantee(0.9, 0.95)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if journal is not None:
        journal.close()
    return wall / n, cpu / n


def journal_alone(n: int, directory: Path, batch: int = 1) -> float:
    """Rows per second that ``Journal.record_many`` commits, ``batch`` rows a transaction, nothing else running."""
    with Journal(directory / f"alone-{batch}.sqlite") as journal:
        journal.start_run("alone", {}, 0)
        completion = Completion(MODEL, "yes", input_tokens=12, output_tokens=1, latency_ms=1.0, extra={"attempts": 1})
        calls = [(Request(MODEL, (Message("user", t),), item_id=str(i), params=(("max_tokens", 4),)), completion,
                  "application", 1e-5) for i, t in enumerate(prompts(n, f"alone-{batch}"))]
        record_many = getattr(journal, "record_many", None)
        if record_many is None:  # an older journal: one row per commit only
            if batch != 1:
                return float("nan")
            record_many = lambda run, rows: journal.record(run, *rows[0][:2], phase=rows[0][2], cost_usd=rows[0][3])  # noqa: E731
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            record_many("alone", calls[start : start + batch])
        return n / (time.perf_counter() - t0)


def code_version() -> str:
    """The commit of the smartmix measured (``unknown`` when it is not in a git checkout)."""
    try:
        from smartmix.bench.command import code_version as version
    except ImportError:
        return "unknown"
    return version()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engine_overhead.md")
    args = parser.parse_args()
    command = "python benchmarks/engine_overhead.py " + " ".join(sys.argv[1:])

    rows = []
    with tempfile.TemporaryDirectory() as tmp, start_server_process() as server:
        tmp = Path(tmp)
        base = server.base_url
        asyncio.run(bare(base, prompts(200, "warm"), 16))  # warm the server (and both paths' imports)
        asyncio.run(through_smartmix(base, prompts(200, "warm"), 16, tmp / "warm.sqlite"))
        for c in args.concurrency:
            runs: dict[str, list[tuple[float, float]]] = {"bare": [], "smartmix": []}
            for rep in range(args.repeats):
                texts = prompts(args.requests, f"c{c}-r{rep}")
                path = tmp / f"c{c}-r{rep}.sqlite"
                # alternate which goes first, and empty the server's in-memory request log before each
                # measurement (it slows the server down as it grows, which would favour whoever runs first)
                for name in ("bare", "smartmix") if rep % 2 == 0 else ("smartmix", "bare"):
                    server.control("reset")
                    if name == "bare":
                        runs[name].append(asyncio.run(bare(base, texts, c)))
                    else:
                        runs[name].append(asyncio.run(through_smartmix(base, texts, c, path)))
            b, s = (statistics.median(w for w, _ in runs[k]) for k in ("bare", "smartmix"))
            bc, sc = (statistics.median(u for _, u in runs[k]) for k in ("bare", "smartmix"))
            k = args.requests
            rows.append({
                "concurrency": c, "bare_s": b, "smartmix_s": s, "bare_rps": k / b, "smartmix_rps": k / s,
                "overhead": s / b - 1.0, "bare_cpu_ms": 1e3 * bc / k, "smartmix_cpu_ms": 1e3 * sc / k,
                "cpu_overhead": sc / bc - 1.0, "journal_wps": k / s, "runs": runs,
            })
            print(f"C={c:>4}: bare {b:6.2f}s ({k / b:5.0f} req/s, {1e3 * bc / k:.2f} ms CPU/req)   smartmix {s:6.2f}s "
                  f"({k / s:5.0f} req/s, {1e3 * sc / k:.2f} ms CPU/req)   overhead wall {100 * (s / b - 1):+5.1f}%  "
                  f"CPU {100 * (sc / bc - 1):+5.1f}%", flush=True)
        own = []
        for c in args.concurrency:
            cells = {}
            for label, with_journal in (("no journal", False), ("journal", True)):
                got = [engine_only(args.requests, c, tmp / f"own-{c}-{rep}.sqlite" if with_journal else None)
                       for rep in range(args.repeats)]
                cells[label] = (statistics.median(w for w, _ in got), statistics.median(u for _, u in got))
            own.append((c, cells))
            print(f"C={c:>4}: engine alone {1e6 * cells['no journal'][1]:.0f} us CPU/call, with the journal "
                  f"{1e6 * cells['journal'][1]:.0f} us CPU/call ({1e6 * cells['journal'][0]:.0f} us wall)", flush=True)
        alone = journal_alone(10_000, tmp)
        batched = journal_alone(50_000, tmp, batch=64)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Engine overhead over the bare OpenAI client",
        "",
        f"Command: `{command.strip()}`  ",
        f"Code version: `{code_version()}` (smartmix from `{Path(smartmix_path()).parent}`)",
        "",
        f"Machine: {os.cpu_count()} CPU(s), {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, openai {openai.__version__}; 1-minute load average at the end: {load:.1f}. "
        "Server: tests/openai_server.py in its own process on 127.0.0.1 (answers at once, no request log file), "
        f"sharing the CPUs with the client. {args.requests:,} chat requests per measurement; median of "
        f"{args.repeats} repeats taking turns to go first (server log emptied before each). *CPU* is this (client) process's CPU time per request: it is what "
        "smartmix adds, and it is far less disturbed than wall time by other work on a shared machine.",
        "",
        "| concurrency | bare client (s) | bare req/s | smartmix engine (s) | smartmix req/s | overhead (wall) "
        "| bare CPU ms/req | smartmix CPU ms/req | overhead (CPU) | journal rows/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['bare_s']:.2f} | {r['bare_rps']:,.0f} | {r['smartmix_s']:.2f} | "
            f"{r['smartmix_rps']:,.0f} | {100 * r['overhead']:+.1f}% | {r['bare_cpu_ms']:.2f} | "
            f"{r['smartmix_cpu_ms']:.2f} | {100 * r['cpu_overhead']:+.1f}% | {r['journal_wps']:,.0f} |"
        )
    lines += [
        "",
        "What smartmix itself spends per call, measured without HTTP (an in-process backend that answers at "
        "once; policy, template, budget, ledger, and the journal's look-up and commit), next to what the bare "
        "client spends per request above:",
        "",
        "| concurrency | engine, no journal: CPU µs/call | engine + journal: CPU µs/call | wall µs/call "
        "| journal rows/s | share of the bare client's CPU per request |",
        "|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {c} | {1e6 * cells['no journal'][1]:.0f} | {1e6 * cells['journal'][1]:.0f} | "
            f"{1e6 * cells['journal'][0]:.0f} | {1 / cells['journal'][0]:,.0f} | "
            f"{100 * cells['journal'][1] / (r['bare_cpu_ms'] / 1e3):.1f}% |"
            for (c, cells), r in zip(own, rows, strict=True)
        ],
        "",
        f"Journal alone, nothing else running (WAL, synchronous=NORMAL): {alone:,.0f} rows/s committed one row "
        f"per transaction, {batched:,.0f} rows/s 64 rows per transaction. The engine commits through the journal "
        "writer's thread every answer queued while the previous batch was being written, in one transaction (and "
        "uses none before its commit), so the journal keeps up with far more than the rows/s column above, which is "
        "simply every answer, journaled.",
        "",
        "All runs (wall s / client CPU s):",
        "",
    ]
    for r in rows:
        for name in ("bare", "smartmix"):
            shown = ", ".join(f"{w:.2f}/{u:.2f}" for w, u in r["runs"][name])
            lines.append(f"- C={r['concurrency']} {name}: {shown}")
    lines.append("")
    print(f"journal alone: {alone:,.0f} rows/s one per commit, {batched:,.0f} rows/s 64 per commit")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
