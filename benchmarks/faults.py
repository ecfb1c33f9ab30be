"""The fault harness: real `smartmix run` processes against an upstream that counts every request it is paid for.

Usage::

    PYTHONPATH=src python benchmarks/faults.py [--items 200] [--out benchmarks/results/faults.md]

The upstream is ``tests/openai_server.py`` in its own process on 127.0.0.1 (a fresh one per scenario), with
a JSONL log in which ``paid`` marks every request a provider would bill. Scenarios:

- ``kill -9 x10``: the run is SIGKILLed ten times at spread-out points, then run to completion;
- ``SIGINT x5`` / ``SIGTERM x5``: the same with Ctrl-C / SIGTERM (each must exit cleanly, status interrupted);
- ``two concurrent runs``: a second process on the same job and run directory while the first runs;
- ``50% fault storm``: half of all requests fail (429 with Retry-After, 500, dropped connections);
- ``cap across attempts``: a first attempt under faults stops at ``--max-cost``; a second attempt with the
  same cap and no faults must not pay past it; a third without cap completes;
- ``serve under garbage``: ``benchmarks/faults_serve.py:run_serve_garbage()`` when present.

Per scenario (schema shared with faults_serve.py): requests paid twice (counted at the server), items lost
or duplicated in the final answers, the bill (certificate) against what the server was paid, cap
overshoot, journal rows against the server's paid calls. Targets: paid twice = 0 except kill -9 (at most
the calls in flight at each kill), 0 lost, bill = server (kill -9: the server also billed the calls in
flight at a kill, which no client received), overshoot 0, journal rows = server's paid calls (same
exception).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

PRICES = {"cheap": (0.1, 0.4), "big": (10.0, 40.0)}
CONCURRENCY = 16


def billed(entry: dict[str, Any]) -> float:
    p_in, p_out = PRICES[entry["model"]]
    return (len(entry["prompt"].split()) * p_in + max(1, len(entry["answer"].split())) * p_out) * 1e-6


def write_items(path: Path, n: int) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(n):
            writer.writerow([f"q{i:04d}", f"Is claim number {i} about subject {i * 7 % 13} true?"])
    return path


def write_job(path: Path, base_url: str, run_dir: Path, *, max_attempts: int = 25) -> Path:
    lines = ['reference = "big"', ""]
    for name, (p_in, p_out) in PRICES.items():
        lines += [f"[models.{name}]", f'base_url = "{base_url}"', f"max_attempts = {max_attempts}", "timeout_s = 10",
                  f"input_price = {p_in}", f"output_price = {p_out}", ""]
    lines += ["[task]", 'template = "Answer yes or no. {text}"', 'labels = ["yes", "no"]', "max_tokens = 4", "",
              "[guarantee]", "target = 0.9", "confidence = 0.9", 'method = "mix"', "",
              "[run]", "seed = 0", f"concurrency = {CONCURRENCY}", f'dir = "{run_dir.as_posix()}"', ""]
    path.write_text("\n".join(lines))
    return path


def env() -> dict[str, str]:
    out = dict(os.environ, COLUMNS="200", NO_COLOR="1", LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1")
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return out


def cli_args(job: Path, items: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "smartmix.cli", "run", "--config", str(job), "--data", str(items), "-q", *extra]


def journal_rows(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(journal, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
    except sqlite3.Error:
        return 0


class Scenario:
    """One fresh upstream, run directory and job; what the server was paid and what the run says."""

    def __init__(self, name: str, n_items: int, *, faults: list[dict[str, Any]] | None = None,
                 delay_s: float = 0.0, max_attempts: int = 25):
        from openai_server import start_server_process

        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix="smartmix-faults-"))
        self.log = self.tmp / "upstream.jsonl"
        self._ctx = start_server_process(log_path=self.log, faults=faults, delay_s=delay_s)
        self.server = self._ctx.__enter__()
        self.runs = self.tmp / "runs"
        self.journal = self.runs / "journal.sqlite"
        self.items = write_items(self.tmp / "items.csv", n_items)
        self.n_items = n_items
        self.job = write_job(self.tmp / "job.toml", self.server.base_url, self.runs, max_attempts=max_attempts)
        self.notes: list[str] = []

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)

    def run(self, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_args(self.job, self.items, *extra), capture_output=True, text=True, env=env(),
                              timeout=timeout, cwd=self.tmp)

    def start(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(cli_args(self.job, self.items, *extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env(), cwd=self.tmp)

    def interrupt_at(self, rows: int, signum: int, *extra: str) -> tuple[str, int]:
        """Start a run; send ``signum`` once the journal holds ``rows`` calls. Returns (what happened, code)."""
        proc = self.start(*extra)
        try:
            while journal_rows(self.journal) < rows:
                if proc.poll() is not None:
                    proc.communicate()
                    return "finished", proc.returncode
                time.sleep(0.005)
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if signum != signal.SIGKILL and (proc.returncode != 130 or "Traceback" in err):
            self.notes.append(f"signal {signum}: exit {proc.returncode} {err.strip().splitlines()[-1:]}")
        return "interrupted", proc.returncode

    def row(self, *, cap: float | None = None, expect_bill_equal: bool = True) -> dict[str, Any]:
        entries = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        paid = [e for e in entries if e.get("paid")]
        counts = collections.Counter((e["model"], e["prompt"]) for e in paid)
        server_usd = sum(map(billed, paid))
        with sqlite3.connect(self.journal) as db:
            run_id, status = db.execute("SELECT run_id, status FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
            journal_rows_ = int(db.execute("SELECT COUNT(*) FROM calls WHERE run_id = ?", (run_id,)).fetchone()[0])
        cert_path = self.runs / run_id / "certificate.json"
        answers_path = self.runs / run_id / "answers.jsonl"
        bill = json.loads(cert_path.read_text())["total_cost_usd"] if cert_path.exists() else float("nan")
        answers = [json.loads(x) for x in answers_path.read_text().splitlines() if x.strip()] \
            if answers_path.exists() else []
        ids = collections.Counter(a["id"] for a in answers)
        lost = sum(1 for i in range(self.n_items) if ids.get(f"q{i:04d}", 0) == 0)
        lost += sum(1 for a in answers if a.get("error"))
        if status != "done":
            self.notes.append(f"final status {status}")
        return {
            "scenario": self.name,
            "paid_twice": sum(n - 1 for n in counts.values() if n > 1),
            "items_lost": lost,
            "items_duplicated": sum(n - 1 for n in ids.values() if n > 1),
            "bill_usd": bill,
            "server_usd": server_usd,
            "cap_overshoot_usd": max(0.0, server_usd - cap) if cap is not None else 0.0,
            "journal_rows": journal_rows_,
            "server_paid_calls": len(paid),
            "notes": "; ".join(self.notes),
        }


def _thresholds(n: int, total_guess: int) -> list[int]:
    step = max(5, total_guess // (n + 2))
    return [step * (k + 1) for k in range(n)]


def signals_scenario(name: str, signum: int, times: int, n_items: int) -> dict[str, Any]:
    s = Scenario(name, n_items, delay_s=0.03)
    try:
        stopped = 0
        for rows in _thresholds(times, int(n_items * 1.6)):
            what, _ = s.interrupt_at(rows, signum)
            if what == "finished":
                break
            stopped += 1
        final = s.run()
        if final.returncode != 0:
            s.notes.append(f"final run exit {final.returncode}: {final.stderr.strip().splitlines()[-1:]}")
        s.notes.insert(0, f"{stopped} {name.split()[0]} delivered, then one run to completion")
        return s.row()
    finally:
        s.close()


def concurrent_scenario(n_items: int) -> dict[str, Any]:
    s = Scenario("two concurrent runs", n_items, delay_s=1.0)  # the first run lasts long enough to overlap
    try:
        first = s.start()
        while journal_rows(s.journal) < 5 and first.poll() is None:
            time.sleep(0.005)
        second = s.run()
        first.communicate(timeout=600)
        s.notes.append(f"first exit {first.returncode}; second exit {second.returncode}: "
                       f"{' '.join(second.stderr.split())[:90]}")
        return s.row()
    finally:
        s.close()


def storm_scenario(n_items: int) -> dict[str, Any]:
    # the first fault that fires wins: 1/6 + 5/6*1/5 + 5/6*4/5*1/4 = 1/2 of all requests fail
    faults = [
        {"kind": "rate_limit", "fraction": 1 / 6, "seed": 1, "retry_after": "0.05"},
        {"kind": "error", "fraction": 1 / 5, "seed": 2, "status": 500},
        {"kind": "drop", "fraction": 1 / 4, "seed": 3},
    ]
    s = Scenario("50% fault storm", n_items, faults=faults)
    try:
        done = s.run()
        entries = [json.loads(x) for x in s.log.read_text().splitlines() if x.strip()]
        failed = sum(not e.get("paid") for e in entries)
        s.notes.append(f"exit {done.returncode}; {failed}/{len(entries)} requests failed at the server")
        return s.row()
    finally:
        s.close()


def cap_scenario(n_items: int) -> dict[str, Any]:
    # first attempt: a third of the reference's requests fail (one attempt each), so its plan differs
    faults = [{"kind": "error", "fraction": 1 / 3, "seed": 4, "status": 503, "model": "big"}]
    s = Scenario("cap across attempts", n_items, faults=faults, max_attempts=1)
    cap = 0.3 * n_items * 1.6e-4  # about 30% of the reference alone
    try:
        first = s.run("--max-cost", f"{cap:.6f}")
        s.server.control("reset")
        second = s.run("--max-cost", f"{cap:.6f}")
        paid_at_cap = sum(billed(json.loads(x)) for x in s.log.read_text().splitlines()
                          if x.strip() and json.loads(x).get("paid"))
        third = s.run()
        s.notes.append(f"cap ${cap:.4f}: exits {first.returncode}, {second.returncode}, {third.returncode}; "
                       f"paid ${paid_at_cap:.4f} by the end of the second attempt")
        row = s.row()
        row["cap_overshoot_usd"] = max(0.0, paid_at_cap - cap)
        return row
    finally:
        s.close()


def serve_scenario() -> dict[str, Any] | None:
    try:
        from faults_serve import run_serve_garbage
    except ImportError:
        return None
    return run_serve_garbage()


def code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


COLUMNS = ("scenario", "paid_twice", "items_lost", "items_duplicated", "bill_usd", "server_usd",
           "cap_overshoot_usd", "journal_rows", "server_paid_calls", "notes")


def render(rows: list[dict[str, Any]], command: str, seconds: float, version: str) -> str:
    lines = [
        "# Fault harness",
        "",
        f"Command: `{command}`  ",
        f"Code version: `{version}` (at the start)  ",
        f"Wall time: {seconds:.0f} s; one trial per scenario (the kill and signal scenarios deliver 10 and 5 each).",
        "",
        "Counted at the upstream (`tests/openai_server.py`, its own process, every request logged). Targets: "
        "paid twice 0 (kill -9: at most the calls in flight at each kill), 0 lost or duplicated, bill = server "
        "(kill -9: less by the calls in flight at a kill, which no client received), overshoot 0, journal rows "
        "= server's paid calls (same exception).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = []
        for col in COLUMNS:
            value = row.get(col, "")
            cells.append(f"{value:.6f}" if isinstance(value, float) else str(value).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--only", help="comma-separated scenario keys: kill,sigint,sigterm,concurrent,storm,cap,serve")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.md")
    args = parser.parse_args(argv)
    keys = set(args.only.split(",")) if args.only else {"kill", "sigint", "sigterm", "concurrent", "storm", "cap",
                                                         "serve"}
    t0 = time.monotonic()
    version = code_version()
    rows: list[dict[str, Any]] = []
    plan = [
        ("kill", lambda: signals_scenario("kill -9 x10", signal.SIGKILL, 10, args.items)),
        ("sigint", lambda: signals_scenario("SIGINT x5", signal.SIGINT, 5, args.items)),
        ("sigterm", lambda: signals_scenario("SIGTERM x5", signal.SIGTERM, 5, args.items)),
        ("concurrent", lambda: concurrent_scenario(args.items)),
        ("storm", lambda: storm_scenario(args.items)),
        ("cap", lambda: cap_scenario(args.items)),
        ("serve", serve_scenario),
    ]
    for key, scenario in plan:
        if key not in keys:
            continue
        row = scenario()
        if row is None:
            print(f"{key}: skipped (benchmarks/faults_serve.py not present)", flush=True)
            continue
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_report(args, rows, time.monotonic() - t0, version)  # each scenario's row survives a later stop
    write_report(args, rows, time.monotonic() - t0, version)
    print(f"wrote {args.out}")


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]], seconds: float, version: str) -> None:
    command = "PYTHONPATH=src python benchmarks/faults.py" + (f" --items {args.items}" if args.items != 200 else "")
    if args.only:
        command += f" --only {args.only}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(rows, command, seconds, version))


if __name__ == "__main__":
    main()
