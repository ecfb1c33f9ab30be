"""Streamed runs at scale: CPU per item and peak memory of a replay, and a 10,000,000-item simulated run.

Writes a synthetic recorded-outputs file (four models, multiple-choice answers, recorded costs, token counts,
log-probability confidences and latencies, ~1.4 kB a line like the real sets in ../shared/data) into a
temporary folder, runs the real CLI on it in a child process (``smartmix run --data FILE --reference ref
--target 0.9 --method cascade --out answers.jsonl``), and reads the child's CPU time (user + sys) and peak
resident memory (ru_maxrss) from the kernel when it exits. The engine (``--no-stream``) runs the same command
on a smaller file for comparison. Then ``smartmix run --simulated imdb --items 10000000`` the same way.
Temporary files are deleted at the end.

    nice -n 10 python benchmarks/streaming.py            # 2,000,000 items, 10,000,000 simulated
    python benchmarks/streaming.py --items 50000 --engine-items 20000 --simulated-items 200000 --no-report
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "results" / "streaming.md"
MODELS = (  # name, agreement with the reference, USD per input token, per output token
    ("tiny", 0.72, 0.10e-6, 0.40e-6),
    ("small", 0.83, 0.60e-6, 2.40e-6),
    ("medium", 0.91, 1.20e-6, 4.80e-6),
    ("ref", 1.0, 2.50e-6, 10.0e-6),
)
SYSTEM = ('Correctly answer the given multiple-choice question by outputting "A", "B", "C", or "D". '
          'Output only "A", "B", "C", or "D", nothing else.')
WORDS = np.array("the of a which is in to what and for by that with as on from are this be at most "
                 "following answer statement true false cell energy law court theory process value".split())


def write_recorded(path: Path, n: int, seed: int = 0, chunk: int = 50_000) -> int:
    """A recorded-outputs file of ``n`` items; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("ABCD"))
    with open(path, "wb") as f:
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            ref = rng.integers(0, 4, k)
            agree = rng.random((k, len(MODELS))) < np.array([m[1] for m in MODELS])
            other = (ref[:, None] + rng.integers(1, 4, (k, len(MODELS)))) % 4
            answer = np.where(agree, ref[:, None], other)
            conf = -rng.exponential(np.where(agree, 0.15, 0.9))
            n_in = rng.integers(90, 260, k)
            words = rng.integers(0, len(WORDS), (k, 90))
            latency = rng.uniform(150, 900, (k, len(MODELS)))
            lines = []
            for r in range(k):
                i = start + r
                question = " ".join(WORDS[words[r]].tolist())
                outputs = {}
                for j, (name, _, p_in, p_out) in enumerate(MODELS):
                    a = str(letters[answer[r, j]])
                    outputs[name] = {
                        "answer": a, "correct": bool(answer[r, j] == ref[r]),
                        "cost_usd": float(n_in[r] * p_in + p_out), "input_tokens": int(n_in[r]), "output_tokens": 1,
                        "confidence": float(conf[r, j]), "latency_ms": float(latency[r, j]),
                    }
                lines.append(orjson.dumps({
                    "id": f"syn-{i}", "task": "synthetic", "split": "test", "system": SYSTEM,
                    "prompt": f"Answer the multiple-choice question below by outputting A, B, C, or D.\n\nQuestion: "
                              f"{question}?\n\nChoices:\nA: {question[:40]}\nB: {question[40:80]}\nC: {question[80:120]}"
                              f"\nD: {question[120:160]}\n\nAnswer: ",
                    "gold": str(letters[ref[r]]), "meta": {"subject": "synthetic"}, "outputs": outputs,
                }, option=orjson.OPT_APPEND_NEWLINE))
            f.write(b"".join(lines))
    return path.stat().st_size


def run_child(args: list[str], cwd: Path) -> dict:
    """Run ``smartmix run ARGS`` in a child, reaped with wait4: its CPU seconds (user + sys), peak RSS, wall time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out_path, err_path, status_path = cwd / "child.out", cwd / "child.err", cwd / "child.status"
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(status_path), "run", *args, "-q"], cwd=cwd, env=env,
                                 stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise RuntimeError(f"smartmix run {' '.join(args)} failed ({code}):\n{err_path.read_text()[-2000:]}")
    hwm = next(line for line in status_path.read_text().splitlines() if line.startswith("VmHWM:"))
    return {"cpu": usage.ru_utime + usage.ru_stime, "rss": int(hwm.split()[1]) * 1024, "wall": wall,
            "stdout": out_path.read_text()}


# The CLI, leaving its /proc status (VmHWM: the peak resident memory of this process image) in a file at exit.
# ru_maxrss would not do: Linux carries the parent's peak over into a child across fork and exec.
CHILD = """
import atexit, sys
status = sys.argv.pop(1)
atexit.register(lambda: open(status, "w").write(open("/proc/self/status").read()))
sys.argv[0] = "smartmix"
from smartmix.cli import main
main()
"""


def code_version() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), *a], capture_output=True,
                              text=True).stdout.strip()

    version = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", "src", "benchmarks/streaming.py")
    return f"{version}-dirty" if changed else version  # uncommitted code, not docs or reports


def summary_line(stdout: str, key: str) -> str:
    return next((line.strip() for line in stdout.splitlines() if key in line), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2_000_000, help="items of the streamed replay")
    parser.add_argument("--engine-items", type=int, default=100_000, help="items of the engine's replay (0: skip)")
    parser.add_argument("--simulated-items", type=int, default=10_000_000, help="items of the simulated run (0: skip)")
    parser.add_argument("--methods", default="cascade", help="comma-separated methods for the streamed replay")
    parser.add_argument("--tmp", default=None, help="folder for the temporary files (default: the system's)")
    parser.add_argument("--no-report", action="store_true", help="print only; do not write the report")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    tmp = Path(tempfile.mkdtemp(prefix="smartmix-streaming-", dir=args.tmp))
    rows = []
    try:
        t = time.perf_counter()
        data = tmp / "recorded.jsonl"
        size = write_recorded(data, args.items)
        print(f"wrote {args.items:,} items, {size / 1e9:.2f} GB, in {time.perf_counter() - t:.0f} s", flush=True)
        common = ["--reference", "ref", "--target", "0.9"]
        for method in methods:
            got = run_child(["--data", str(data), *common, "--method", method, "--out", str(tmp / "answers.jsonl")], tmp)
            lines = sum(1 for _ in open(tmp / "answers.jsonl", "rb"))
            assert lines == args.items, (lines, args.items)
            rows.append(("streamed replay", method, args.items, got, summary_line(got["stdout"], "savings")))
            print(rows[-1][:3], f"{got['cpu'] / args.items * 1e6:.1f} us/item, {got['rss'] / 1e9:.2f} GB", flush=True)
            (tmp / "answers.jsonl").unlink()
        if args.engine_items:
            small = tmp / "recorded-small.jsonl"
            write_recorded(small, args.engine_items, seed=1)
            for flag, label in (("--stream", "streamed replay"), ("--no-stream", "engine replay")):
                got = run_child(["--data", str(small), *common, "--method", methods[0], flag,
                                 "--out", str(tmp / "answers.jsonl")], tmp)
                rows.append((label, methods[0], args.engine_items, got, summary_line(got["stdout"], "savings")))
                print(rows[-1][:3], f"{got['cpu'] / args.engine_items * 1e6:.1f} us/item", flush=True)
            small.unlink()
        data.unlink()
        if args.simulated_items:
            got = run_child(["--simulated", "imdb", "--items", str(args.simulated_items), "--target", "0.9",
                             "--method", "mix", "--out", str(tmp / "simulated.jsonl")], tmp)
            lines = sum(1 for _ in open(tmp / "simulated.jsonl", "rb"))
            assert lines == args.simulated_items, (lines, args.simulated_items)
            rows.append(("streamed simulation (imdb)", "mix", args.simulated_items, got,
                         summary_line(got["stdout"], "savings")))
            print(rows[-1][:3], f"{got['cpu']:.0f} s CPU, {got['rss'] / 1e9:.2f} GB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = ["| run | method | items | CPU s (user+sys) | CPU µs / item | peak RSS | wall s | result |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for label, method, n, got, line in rows:
        table.append(f"| {label} | {method} | {n:,} | {got['cpu']:.1f} | {got['cpu'] / n * 1e6:.1f} | "
                     f"{got['rss'] / 1e9:.2f} GB | {got['wall']:.1f} | {line} |")
    print("\n".join(table))
    if args.no_report:
        return
    command = "nice -n 10 python benchmarks/streaming.py" + "".join(
        f" {a}" for a in sys.argv[1:])
    REPORT.write_text(
        "# Streamed runs: CPU per item and peak memory\n\n"
        f"Command: `{command}`  \n"
        f"Code version: `{code_version()}`  \n"
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; one trial per row, on a 2-core machine "
        f"shared with other work (load average {os.getloadavg()[0]:.1f} at the end).\n\n"
        "Each row is one `smartmix run` in a child process, end to end: interpreter start-up, reading the file, "
        "profiling, the plan, writing every answer (`--out answers.jsonl`). CPU is the child's user + sys time and "
        "peak RSS its `VmHWM` at exit, both from the kernel. The replayed file is synthetic (four models, "
        f"multiple-choice answers, every recorded field, {size / max(1, args.items):,.0f} bytes a line); the "
        "engine row runs the same command with `--no-stream`.\n\n"
        + "\n".join(table) + "\n"
    )
    print(f"report: {REPORT}")


if __name__ == "__main__":
    main()
