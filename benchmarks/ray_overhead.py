"""Local engine vs the Ray Data engine on one machine: what Ray costs in wall time, honestly.

    python benchmarks/ray_overhead.py                       # 100,000 replayed items, 2 CPUs
    python benchmarks/ray_overhead.py --items 20000 --cpus 2

A recorded set (mmlu-qwen-oai, test split) is bootstrapped to ``--items`` items (a temporary recorded file with
fresh ids, same answers and costs), then the same job (method ``mix``, T = 0.8, seed 0) runs twice: with the
application phase local (``mode="sync"``) and on a local Ray cluster of ``--cpus`` CPUs (``mode="ray"``; cluster
start-up is timed apart). The report gives wall and CPU time of each, and checks that answers, costs and the
certificate are identical. Replayed calls cost no network time, so this measures pure overhead: on real providers
the calls dominate and Ray's value is spreading them over machines.

Writes benchmarks/results/ray_overhead.md (the command and code version at the top).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import smartmix  # noqa: E402
from smartmix.distributed.ray_data import RaySettings  # noqa: E402
from smartmix.journal import Journal  # noqa: E402

SHARED = Path(os.environ.get("SMARTMIX_SHARED_DATA", ROOT.parent / "shared" / "data"))


def bootstrap(source: Path, n_items: int, out: Path, seed: int = 0) -> None:
    rows = [json.loads(line) for line in source.read_text().split("\n") if line.strip()]
    rng = random.Random(seed)
    with out.open("w") as f:
        for i in range(n_items):
            row = dict(rng.choice(rows))
            row["id"] = f"{row['id']}#{i}"
            row["prompt"] = f"{row['prompt']}\n[{i}]"  # distinct requests, as distinct items would be
            f.write(json.dumps(row) + "\n")


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(path: Path, run_dir: Path, mode: str, cpus: int):
    journal = Journal(run_dir / "journal.sqlite")
    journal.start_run("r", {"mode": mode}, 0)
    started, cpu0 = time.perf_counter(), cpu()
    try:
        result = smartmix.run(path, reference="gpt-4o", target=0.8, method="mix", seed=0, journal=journal,
                              run_id="r", mode=mode, ray_settings=RaySettings(num_cpus=cpus))
    finally:
        journal.close()
    return result, time.perf_counter() - started, cpu() - cpu0


def code_version() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ray_overhead.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/ray_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.jsonl"
        bootstrap(SHARED / "mmlu-qwen-oai" / "test.jsonl", args.items, path)
        local, t_local, c_local = run(path, Path(tmp) / "local", "sync", args.cpus)
        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT / "src")}})
        t_start = time.perf_counter() - t0
        distributed, t_ray, c_ray = run(path, Path(tmp) / "ray", "ray", args.cpus)
        ray.shutdown()
    same = [(r.id, r.answer, r.model, r.cost) for r in local.items] == [
        (r.id, r.answer, r.model, r.cost) for r in distributed.items
    ]
    applied = sum(r.phase == "application" for r in local.items)
    lines = [
        "# Local engine vs Ray Data engine (application phase), one machine", "",
        f"Command: `{command.strip()}`  ", f"Code version: `{code_version()}`  ",
        f"{args.items:,} items bootstrapped from mmlu-qwen-oai (replayed: no network time), method mix, T = 0.8, "
        f"seed 0; {applied:,} items answered in the application phase; Ray: local cluster of {args.cpus} CPUs.", "",
        "| engine | wall s | CPU s (this process + children) |", "|---|---|---|",
        f"| local | {t_local:.1f} | {c_local:.1f} |",
        f"| Ray (cluster start, apart) | {t_start:.1f} | |",
        f"| Ray (run) | {t_ray:.1f} | {c_ray:.1f} (workers not included) |", "",
        f"Identical answers, models and per-item costs: {same}; identical certificate: "
        f"{local.certificate == distributed.certificate}; bill {local.total_cost:.4f} vs {distributed.total_cost:.4f} USD.",
        "",
        "Ray's overhead on one machine is the price of serialising the calls to worker processes and back, and of "
        "each worker rebuilding the backend; it pays when the calls are slow (real providers, local GPU models) "
        "and when the work spreads over several machines.", "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
