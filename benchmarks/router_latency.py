"""Router latency per prompt on CPU, after load, for both feature kinds.

    python benchmarks/router_latency.py [--data ../shared/data/mmlu-qwen-oai] [--prompts 300]

Trains on the set's train split, then times single-prompt calls (features, predict, select the cheapest
model with predicted agreement >= 0.8) on test prompts, in this process, after one warm-up call.
Writes benchmarks/results/router_latency.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from smartmix.router.embedding import Embedder, HashingEmbedder
from smartmix.router.predictor import AgreementPredictor, train_from_recorded
from smartmix.router.selector import select_threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/mmlu-qwen-oai"
    )
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "router_latency.md")
    args = parser.parse_args()
    prompts = [json.loads(line)["prompt"] for line in open(args.data / "test.jsonl")][: args.prompts]
    rows = []
    for label, kind in (("hashing", HashingEmbedder), ("minilm", Embedder)):
        trained = train_from_recorded([args.data / "train.jsonl"], predictor=AgreementPredictor(kind()))
        path = trained.save(Path("/tmp") / f"router-latency-{label}.npz")
        t0 = time.perf_counter()
        predictor = AgreementPredictor.load(path)
        load_ms = (time.perf_counter() - t0) * 1000
        predictor.predict([prompts[0]])  # warm-up: loads the embedding model, if any
        times = []
        for prompt in prompts:
            t = time.perf_counter()
            select_threshold(predictor.predict([prompt]), predictor.costs, 0.8)
            times.append((time.perf_counter() - t) * 1000)
        rows.append((label, load_ms, float(np.median(times)), float(np.quantile(times, 0.99))))
    lines = [
        f"Command: `python benchmarks/router_latency.py --data {args.data} --prompts {args.prompts}`",
        "",
        "| features | load ms | median ms / prompt | p99 ms / prompt |",
        "| --- | --- | --- | --- |",
        *[f"| {label} | {load:.1f} | {med:.2f} | {p99:.2f} |" for label, load, med, p99 in rows],
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
