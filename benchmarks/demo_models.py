"""Measure the two local demo models on Rotten Tomatoes sentiment, through their real llama.cpp servers.

    python benchmarks/demo_models.py            # 200 balanced reviews
    python benchmarks/demo_models.py -n 400 --concurrency 2 --json out.json

For each model (SmolLM2-135M = cheap, Gemma 3 270M = reference): start-up time of its server, resident
memory, requests/s with one thread, accuracy against the labels, how often the answer is not a label, and
the AUROC of the first-token top-2 logprob margin for "the answer is correct". Between them: agreement, and
the AUROC of the cheap model's margin for "the cheap model agrees with the reference" (the signal a
cascade relies on). Optionally, how many answers change when the same items are asked again.

Requests go through the openai SDK (``AsyncOpenAI``) to the completions endpoint with ``max_tokens=1``,
``temperature=0`` and ``logprobs=5``, exactly as the demo will send them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    from smartmix.demo.llama_server import LlamaServer, first_token_top_logprobs
except ImportError:  # running from a checkout without installing: use the src layout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from smartmix.demo.llama_server import LlamaServer, first_token_top_logprobs

from smartmix.demo.local_models import GEMMA3, SMOLLM2, ensure_models
from smartmix.demo.prompt import build_prompt, label_margin, parse_label
from smartmix.demo.reviews import load_reviews
from smartmix.stats import auroc


@dataclass
class Answer:
    text: str
    label: str | None
    margin: float | None
    latency_s: float


@dataclass
class ModelRun:
    name: str
    startup_s: float = float("nan")
    rss_mb: float = float("nan")
    answers: list[Answer] = field(default_factory=list)
    wall_s: float = float("nan")
    cpu_s: float = float("nan")
    repeat_changed: int | None = None
    repeat_margin_diff: float = float("nan")  # largest |change| of the top-2 margin between the two asks
    repeat_n: int = 0


async def ask_all(server: LlamaServer, prompts: list[str], concurrency: int) -> tuple[list[Answer], float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=60.0)
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> Answer:
        async with sem:
            t0 = time.perf_counter()
            try:
                resp = await client.completions.create(
                    model=server.name, prompt=prompt, max_tokens=1, temperature=0, logprobs=5
                )
            except Exception:
                server.check_alive()  # a dead server gives a clear message instead of a connection error
                raise
            latency = time.perf_counter() - t0
        choice = resp.choices[0]
        tops = first_token_top_logprobs(choice)
        return Answer(choice.text, parse_label(choice.text), label_margin(tops), latency)

    try:
        t0 = time.perf_counter()
        answers = await asyncio.gather(*(one(p) for p in prompts))
        return list(answers), time.perf_counter() - t0
    finally:
        await client.close()


def fmt(x: float | None, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return format(x, spec)


async def main_async(args: argparse.Namespace) -> dict:
    models = ensure_models(install=not args.no_install)
    reviews = load_reviews(args.n, seed=args.seed)
    prompts = [build_prompt(t) for t in reviews["text"]]
    gold = reviews["label"].to_numpy()
    specs = [(SMOLLM2, models.smollm2), (GEMMA3, models.gemma3)]
    runs: dict[str, ModelRun] = {}
    print(f"{len(prompts)} reviews ({(gold == 'positive').sum()} positive), seed {args.seed}, "
          f"concurrency {args.concurrency}, {args.threads} thread(s) per server", flush=True)  # fmt: skip

    servers = []
    try:
        for spec, path in specs:
            server = LlamaServer(
                path, spec.name, n_threads=args.threads, swa_full=spec.swa_full, ctx=args.ctx
            )
            server.start()
            servers.append(server)
            run = runs[spec.name] = ModelRun(spec.name, startup_s=server.startup_s or float("nan"))
            run.rss_mb = (server.rss_bytes() or float("nan")) / 2**20
            print(f"  {spec.name}: server up in {run.startup_s:.2f} s on {server.base_url}", flush=True)

        # Untimed warm-up request per server (the first one fills the shared few-shot prefix in the KV cache).
        for server in servers:
            await ask_all(server, prompts[:1], 1)

        for server in servers:
            run = runs[server.name]
            cpu0 = server.cpu_seconds()
            run.answers, run.wall_s = await ask_all(server, prompts, args.concurrency)
            cpu1 = server.cpu_seconds()
            if cpu0 is not None and cpu1 is not None:
                run.cpu_s = cpu1 - cpu0
            run.rss_mb = max(run.rss_mb, (server.rss_bytes() or 0) / 2**20)
            print(f"  {server.name}: {len(prompts)} requests in {run.wall_s:.1f} s", flush=True)

        both_wall = float("nan")
        if not args.no_parallel:
            t0 = time.perf_counter()
            await asyncio.gather(*(ask_all(s, prompts, args.concurrency) for s in servers))
            both_wall = time.perf_counter() - t0
            print(f"  both servers at once: {2 * len(prompts)} requests in {both_wall:.1f} s", flush=True)

        if args.repeat > 0:
            k = min(args.repeat, len(prompts))
            for server in servers:
                run = runs[server.name]
                again, _ = await ask_all(server, prompts[:k], args.concurrency)
                run.repeat_n = k
                run.repeat_changed = sum(
                    a.text != b.text for a, b in zip(run.answers[:k], again, strict=True)
                )
                diffs = [
                    abs(a.margin - b.margin)
                    for a, b in zip(run.answers[:k], again, strict=True)
                    if a.margin is not None and b.margin is not None
                ]
                run.repeat_margin_diff = max(diffs) if diffs else float("nan")
    finally:
        for server in servers:
            server.stop()

    # ------------------------------------------------------------------------------------------- report
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result: dict = {"n": len(prompts), "seed": args.seed, "concurrency": args.concurrency,
                    "cpus": os.cpu_count(), "load_average_1min": load, "models": {}}  # fmt: skip
    header = (f"{'model':<14} {'accuracy':>8} {'invalid':>7} {'AUROC':>6} {'req/s':>6} {'req/CPU-s':>9} "
              f"{'p50 ms':>7} {'start s':>7} {'RSS MB':>6} {'repeat':>7}")  # fmt: skip
    print(
        f"\nmachine: {os.cpu_count()} CPUs, 1-min load average {load:.2f} at the end "
        "(req/s drops when other work shares the cores; req/CPU-s does not)"
    )
    print(header)
    print("-" * len(header))
    labels_of = {}
    for spec, _ in specs:
        run = runs[spec.name]
        labels = np.array([a.label for a in run.answers], dtype=object)
        labels_of[spec.name] = labels
        correct = labels == gold
        margins = np.array([np.nan if a.margin is None else a.margin for a in run.answers], dtype=float)
        acc = float(correct.mean())
        invalid = float(np.mean([lab is None for lab in labels]))
        roc = auroc(correct, margins)
        rps = len(prompts) / run.wall_s
        rpcpu = len(prompts) / run.cpu_s if run.cpu_s > 0 else float("nan")
        p50 = float(np.median([a.latency_s for a in run.answers]) * 1000)
        rep = f"{run.repeat_changed}/{run.repeat_n}" if run.repeat_changed is not None else "-"
        print(f"{spec.name:<14} {acc:>8.3f} {invalid:>7.3f} {fmt(roc):>6} {rps:>6.2f} {fmt(rpcpu, '.2f'):>9} {p50:>7.0f} "
              f"{run.startup_s:>7.2f} {run.rss_mb:>6.0f} {rep:>7}")  # fmt: skip
        result["models"][spec.name] = {
            "role": spec.role, "accuracy": acc, "invalid_rate": invalid, "auroc_margin_correct": roc,
            "requests_per_s": rps, "requests_per_cpu_s": rpcpu, "p50_latency_ms": p50, "startup_s": run.startup_s, "rss_mb": run.rss_mb,
            "repeat_changed": run.repeat_changed, "repeat_n": run.repeat_n,
            "repeat_max_margin_change": run.repeat_margin_diff,
        }  # fmt: skip

    cheap, ref = labels_of[SMOLLM2.name], labels_of[GEMMA3.name]
    agree = cheap == ref
    cheap_margins = np.array([np.nan if a.margin is None else a.margin for a in runs[SMOLLM2.name].answers])
    agreement = float(agree.mean())
    roc_agree = auroc(agree, cheap_margins)
    both_rps = 2 * len(prompts) / both_wall if both_wall == both_wall else float("nan")
    print()
    print(f"agreement {SMOLLM2.name} vs {GEMMA3.name}: {agreement:.3f}")
    print(f"AUROC of {SMOLLM2.name}'s margin for agreeing with {GEMMA3.name}: {fmt(roc_agree)}")
    if both_rps == both_rps:
        print(f"both servers at once: {both_rps:.2f} requests/s in total")
    for spec, _ in specs:
        run = runs[spec.name]
        if run.repeat_n:
            print(f"asked again ({spec.name}, first {run.repeat_n}): {run.repeat_changed} answers changed, "
                  f"largest margin change {fmt(run.repeat_margin_diff, '.2g')}")  # fmt: skip
    result.update(
        agreement=agreement, auroc_cheap_margin_agreement=roc_agree, both_at_once_requests_per_s=both_rps
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="number of reviews (balanced), default 200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight per server")
    parser.add_argument("--threads", type=int, default=1, help="threads per server")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument(
        "--repeat", type=int, default=50, help="ask the first K items again to count changed answers"
    )
    parser.add_argument("--no-parallel", action="store_true", help="skip the both-servers-at-once run")
    parser.add_argument(
        "--no-install", action="store_true", help="fail instead of pip-installing missing models"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
