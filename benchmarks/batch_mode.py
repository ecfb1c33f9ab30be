"""The same job priced both ways — synchronous calls and provider batch jobs — on a local batch provider.

    python benchmarks/batch_mode.py                  # 2,000 items, methods mix and efficient, T = 0.9
    python benchmarks/batch_mode.py --items 5000 --methods mix

The provider is ``tests/openai_batch_server.py`` (FastAPI + uvicorn on 127.0.0.1): the OpenAI chat API and the
Files + Batches APIs, with the same deterministic answers both ways. Models are named gpt-4o-mini and gpt-4o so
that genai-prices prices them, batch calls included (OpenAI's batch price is half the synchronous one). For each
method the job runs twice on the same seed — ``mode="sync"`` and ``mode="batch"`` — and the report compares the
bill per phase, the certificate and the answers. Then a run in batch mode is killed (SIGKILL) while its batch is
pending, and rerun: the provider counts how many requests were submitted twice.

Writes benchmarks/results/batch_mode.md (the command and code version at the top).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from openai_batch_server import run_batch_server, start_batch_server  # noqa: E402

import smartmix  # noqa: E402
from smartmix.api import Job  # noqa: E402
from smartmix.backends.openai_compat import EndpointConfig, OpenAIBackend  # noqa: E402
from smartmix.batch import BatchSettings  # noqa: E402
from smartmix.journal import Journal  # noqa: E402
from smartmix.models import ModelSpec, Pool  # noqa: E402
from smartmix.tasks import Item, LabelComparator, Template  # noqa: E402

CHEAP, REFERENCE = "gpt-4o-mini", "gpt-4o"


def answer(model: str, prompt: str) -> str:
    digest = hashlib.sha256(prompt.encode()).digest()
    truth = "yes" if digest[0] % 2 else "no"
    if model == CHEAP and digest[1] % 100 < 5:  # the cheap model disagrees on ~5% of the items
        return "no" if truth == "yes" else "yes"
    return truth


def job(base_url: str, n_items: int) -> Job:
    items = [Item(id=f"q{i}", fields={"n": str(i)}) for i in range(n_items)]
    endpoints = {m: EndpointConfig(m, base_url=base_url, max_concurrency=64) for m in (CHEAP, REFERENCE)}
    pool = Pool([ModelSpec(CHEAP, 0.15e-6, 0.6e-6),
                 ModelSpec(REFERENCE, 2.5e-6, 10e-6)], REFERENCE)
    template = Template(user="Here is claim number {n}, stated in a few more words so that it costs something "
                             "to read. Is it true? Answer yes or no.")
    return Job(items=items, pool=pool, template=template, comparator=LabelComparator(["yes", "no"]),
               backend=OpenAIBackend(endpoints), source="benchmark")


def run(base_url: str, run_dir: Path, mode: str, method: str, n_items: int, target: float):
    journal = Journal(run_dir / "journal.sqlite")
    journal.start_run("bench", {"mode": mode, "method": method}, 0)
    started = time.perf_counter()
    try:
        result = smartmix.run(job=job(base_url, n_items), target=target, confidence=0.95, method=method, seed=7,
                              journal=journal, run_id="bench", mode=mode,
                              batch_settings=BatchSettings(poll_interval_s=0.05, poll_max_interval_s=0.2))
    finally:
        journal.close()
    return result, time.perf_counter() - started


def phase_cost(result, phase: str) -> float:
    return sum(cost for (_, p), cost in result.ledger.entries.items() if p == phase)


_KILLED = textwrap.dedent("""
    import sys
    sys.path.insert(0, {bench!r})
    from pathlib import Path
    import batch_mode as b
    result, _ = b.run({url!r}, Path({run_dir!r}), "batch", "mix", {n}, 0.9)
    print("BILL", result.total_cost)
""")


def kill_and_resume(n_items: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, start_batch_server(process_s=5.0) as server:
        code = _KILLED.format(bench=str(ROOT / "benchmarks"), url=server.base_url, run_dir=tmp, n=n_items)
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while server.accounting()["batches_created"] == 0:
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the run never created a batch: " + child.stderr.read().decode()[-500:])
            time.sleep(0.05)
        time.sleep(0.5)
        child.kill()
        child.wait()
        pending = server.accounting()
        rerun = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        if rerun.returncode != 0:
            raise RuntimeError(rerun.stderr[-2000:])
        done = server.accounting()
    return {"at_kill": pending, "after_resume": done}


def code_version() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--methods", default="mix,efficient")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "batch_mode.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/batch_mode.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    for method in args.methods.split(","):
        with run_batch_server(process_s=0.5) as server, tempfile.TemporaryDirectory() as tmp:
            server.control.set_answers(answer)
            sync, t_sync = run(server.base_url, Path(tmp) / f"{method}-sync", "sync", method, args.items, args.target)
            before = server.accounting()
            batch, t_batch = run(server.base_url, Path(tmp) / f"{method}-batch", "batch", method, args.items,
                                 args.target)
            after = server.accounting()
            same_answers = [(r.answer, r.model) for r in sync.items] == [(r.answer, r.model) for r in batch.items]
            rows.append({
                "method": method,
                "sync": {p: phase_cost(sync, p) for p in ("profiling", "application")} | {"total": sync.total_cost},
                "batch": {p: phase_cost(batch, p) for p in ("profiling", "application")} | {"total": batch.total_cost},
                "reference": sync.reference_cost,
                "same_certificate": sync.certificate == batch.certificate,
                "same_answers": same_answers,
                "batches": after["batches_created"] - before["batches_created"],
                "resubmissions": after["resubmissions"] - before["resubmissions"],
                "wall": (t_sync, t_batch),
                "statement": batch.certificate.statement(),
            })
            print(rows[-1], flush=True)
    killed = kill_and_resume(min(args.items, 1000))
    lines = [
        "# Batch mode: the same job priced synchronously and as provider batch jobs", "",
        f"Command: `{command.strip()}`  ", f"Code version: `{code_version()}`  ",
        f"Items: {args.items:,}; target {args.target}; confidence 0.95; seed 7; models {CHEAP} (cheap) and "
        f"{REFERENCE} (reference), priced by genai-prices (batch calls at its batch price: half).", "",
        "| method | phase | sync USD | batch USD | batch ÷ sync |", "|---|---|---|---|---|",
    ]
    for row in rows:
        for phase in ("profiling", "application", "total"):
            s, b = row["sync"][phase], row["batch"][phase]
            ratio = f"{b / s:.3f}" if s else "n/a"
            lines.append(f"| {row['method']} | {phase} | {s:.4f} | {b:.4f} | {ratio} |")
    lines += ["", "| method | reference-only USD | savings sync | savings batch | same certificate | same answers | "
              "batch jobs | resubmissions | wall s sync / batch |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ref = row["reference"]
        lines.append(
            f"| {row['method']} | {ref:.4f} | {ref / row['sync']['total']:.2f}× | {ref / row['batch']['total']:.2f}× | "
            f"{row['same_certificate']} | {row['same_answers']} | {row['batches']} | {row['resubmissions']} | "
            f"{row['wall'][0]:.1f} / {row['wall'][1]:.1f} |"
        )
    lines += ["", f"Certificate (both modes): {rows[0]['statement']}", "",
              "## Killed while its batch was pending, then rerun", "",
              "A batch-mode run (mix, up to 1,000 items) was killed with SIGKILL once its first batch job existed "
              "at the provider (the provider takes 5 s per batch), then the same command was run again.", "",
              "| at the provider | at the kill | after the rerun |", "|---|---|---|"]
    for key in ("batches_created", "requests_submitted", "distinct_requests", "resubmissions", "answered"):
        lines.append(f"| {key} | {killed['at_kill'][key]} | {killed['after_resume'][key]} |")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
