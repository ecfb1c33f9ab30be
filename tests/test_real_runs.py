"""The real-provider path end to end: ``smartmix run --config job.toml --data items.csv`` over real HTTP.

One OpenAI-compatible test server (``tests/openai_server.py``) runs as a child process for the whole
module, on 127.0.0.1, with a JSONL request log in which ``paid`` marks every request the "provider" would
bill. It requires an API key (a distinctive fake one, passed to smartmix through an environment variable)
and answers with :func:`answer`: the truth for the reference ``big``; ``cheap`` and ``mid`` disagree with
it on a known, hash-chosen share of prompts. smartmix runs as a subprocess through its CLI, as a user would
run it, except where noted: the fault-injection tests run the same job in-process so that retries can back
off in milliseconds instead of seconds, and the bad-input cases call the CLI's ``main()`` in-process (one
of them also through the console script).

What is checked, from the server's own log wherever money is concerned:

- a run prints a certificate, writes answers, is listed by ``smartmix logs``; the same command again is
  served from the journal (nothing paid); ``--no-cache`` with another seed pays again;
- kill -9 in profiling, then in application, then a rerun to completion: the output equals an
  uninterrupted run's, no item is missing, and no request was paid twice, except the ones that were in
  flight at the instant of a kill (their answers never reached the client; a provider bills them anyway);
- half of all requests failing (429 with Retry-After, 500, dropped connections): same answers as a clean run;
- a candidate that always fails is never chosen; a reference that always fails (401) gives failed items,
  exit code 3, a message that says why; the bill is what the server was paid for, nothing more;
- a provider that reports no token usage: the paid answers are priced from estimated tokens, not lost;
- ``--max-cost``: stops below the cap with exit code 4 and says how to continue; the rerun with a higher
  cap completes, and both together paid exactly what one uninterrupted run pays;
- the API keys appear nowhere: journal bytes, stdout/stderr, answers, certificate;
- bad input (missing template field, unknown model, missing price, malformed CSV row): exit code 2 and a
  one-paragraph message, no traceback.

Run as a script, this file is the test server with :func:`answer` (the server's command line only takes
answers as a JSON dict, which cannot differ between models).
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

KEY_ENV = "SMARTMIX_TEST_KEY"
BAD_KEY_ENV = "SMARTMIX_TEST_BAD_KEY"
GOOD_KEY = "sk-smxtest-GOODKEY-5f1c0e9a7b3d4c2e8a6b"
BAD_KEY = "sk-smxtest-BADKEY-9d8c7b6a5f4e3d2c1b0a"

N_ITEMS = 300
PRICES = {"cheap": (0.1, 0.4), "mid": (1.0, 4.0), "big": (10.0, 40.0)}  # USD per million tokens
FLIP = {"cheap": 0.04, "mid": 0.12}  # share of prompts on which a candidate disagrees with the reference


# ------------------------------------------------------------------------------------------ the provider


def truth(prompt: str) -> str:
    return "yes" if hashlib.sha256(prompt.encode()).digest()[0] % 2 else "no"


def answer(model: str, prompt: str) -> str:
    """The reference ``big`` says :func:`truth`; a candidate flips it on a hash-chosen share of prompts."""
    said = truth(prompt)
    h = hashlib.sha256(f"{model}|{prompt}".encode()).digest()
    if int.from_bytes(h[:4], "big") / 2**32 < FLIP.get(model, 0.0):
        return "no" if said == "yes" else "yes"
    return said


def billed(entry: dict) -> float:
    """What the test server bills for a paid request (its usage counts words), at :data:`PRICES`."""
    p_in, p_out = PRICES[entry["model"]]
    return (len(entry["prompt"].split()) * p_in + max(1, len(entry["answer"].split())) * p_out) * 1e-6


def _serve(argv: list[str]) -> None:
    """``python tests/test_real_runs.py --port P --log FILE``: the test server answering with :func:`answer`."""
    import argparse

    import uvicorn

    sys.path.insert(0, str(HERE))
    from openai_server import Control, create_app

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args(argv)

    class TestControl(Control):
        def reset(self) -> None:  # keep the answers and the key across resets (faults, delay go)
            super().reset()
            self.answers = answer
            self.api_key = args.api_key

    control = TestControl(args.log)
    uvicorn.run(create_app(control), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator:
    from openai_server import ServerProcess, free_port

    log = tmp_path_factory.mktemp("server") / "requests.jsonl"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--log", str(log), "--api-key", GOOD_KEY]
    )
    srv = ServerProcess(proc, port, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the test server did not start") from None
                time.sleep(0.05)
        log.touch()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def items_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "items.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(N_ITEMS):
            writer.writerow([f"q{i:03d}", f"Is claim number {i} about subject {i * 7 % 13} true?"])
    return path


def write_config(
    path: Path, base_url: str, run_dir: Path, *, reference_key_env: str = KEY_ENV, max_attempts: int = 6,
    cheap_concurrency: int = 16, template: str = "Answer yes or no. {text}", drop_price: str | None = None,
    reference: str = "big",
) -> Path:
    lines = [f'reference = "{reference}"', ""]
    for name, (p_in, p_out) in PRICES.items():
        lines += [
            f"[models.{name}]",
            f'base_url = "{base_url}"',
            f'api_key_env = "{reference_key_env if name == "big" else KEY_ENV}"',
            f"max_attempts = {max_attempts}",
            f"max_concurrency = {cheap_concurrency if name == 'cheap' else 16}",
            "timeout_s = 10",
        ]
        if name != drop_price:
            lines += [f"input_price = {p_in}", f"output_price = {p_out}"]
        lines.append("")
    lines += [
        "[task]", f'template = "{template}"', 'labels = ["yes", "no"]', "max_tokens = 4", "",
        "[guarantee]", "target = 0.9", "confidence = 0.9", 'method = "mix"', "",
        "[run]", "seed = 0", "concurrency = 32", f'dir = "{run_dir.as_posix()}"', "",
    ]
    path.write_text("\n".join(lines))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({KEY_ENV: GOOD_KEY, BAD_KEY_ENV: BAD_KEY, "COLUMNS": "200", "NO_COLOR": "1"}, **extra)
    return env


def _cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "smartmix.cli", *map(str, args)]


def smartmix(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(*args), capture_output=True, text=True, env=_env(), timeout=timeout, cwd=REPO)


def run_id_of(stdout: str) -> str:
    found = re.search(r"\brun ([0-9a-f]{12})\b", stdout, re.IGNORECASE)
    assert found, stdout
    return found.group(1)


def read_answers(run_dir: Path, run_id: str) -> list[dict]:
    path = run_dir / run_id / "answers.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def columns(rows: list[dict], *names: str) -> list[tuple]:
    return sorted(tuple(r[n] for n in names) for r in rows)


def paid_keys(entries: list[dict]) -> collections.Counter:
    return collections.Counter((e["model"], e["prompt"]) for e in entries if e["paid"])


@dataclass
class Done:
    run_dir: Path
    run_id: str
    stdout: str
    stderr: str
    answers: list[dict]
    certificate: dict
    requests: list[dict]  # the server log's entries for this run


@pytest.fixture(scope="module")
def clean(server, items_csv, tmp_path_factory) -> Done:
    """One uninterrupted, well-behaved run (seed 0): what every other run must reproduce."""
    tmp = tmp_path_factory.mktemp("clean")
    config = write_config(tmp / "job.toml", server.base_url, tmp / "runs")
    start = len(server.requests())
    r = smartmix("run", "--config", config, "--data", items_csv, "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = run_id_of(r.stdout)
    run_dir = tmp / "runs"
    return Done(
        run_dir, run_id, r.stdout, r.stderr, read_answers(run_dir, run_id),
        json.loads((run_dir / run_id / "certificate.json").read_text()), server.requests()[start:],
    )


def assert_no_key_leak(*texts: str, files: list[Path] = ()) -> None:
    for key in (GOOD_KEY, BAD_KEY):
        for text in texts:
            assert key not in text
        for path in files:
            assert key.encode() not in path.read_bytes(), f"API key found in {path}"


# ---------------------------------------------------------------------------------------------- tests


def test_run_end_to_end_then_from_the_journal(server, clean, items_csv):
    assert "With probability at least 0.9, at least 90.0% of the 300 outputs" in clean.stdout
    assert len(clean.answers) == N_ITEMS and all(a["error"] is None for a in clean.answers)
    by_model = collections.Counter(a["model"] for a in clean.answers)
    assert by_model["cheap"] > 0 and by_model["big"] > 0, by_model  # profiling and application both ran
    agree = sum(a["answer"] == truth(f"Answer yes or no. Is claim number {int(a['id'][1:])} about subject "
                                     f"{int(a['id'][1:]) * 7 % 13} true?") for a in clean.answers)
    assert agree >= 0.9 * N_ITEMS
    paid = [e for e in clean.requests if e["paid"]]
    assert paid and max(paid_keys(paid).values()) == 1
    assert clean.certificate["total_cost_usd"] == pytest.approx(sum(map(billed, paid)), rel=1e-9)

    logs = smartmix("logs", "--run-dir", clean.run_dir)
    assert logs.returncode == 0, logs.stderr
    row = next(line for line in logs.stdout.splitlines() if clean.run_id in line)
    assert "done" in row and f"{clean.certificate['total_cost_usd']:.4f}" in row and f"{len(paid)}" in row

    config = clean.run_dir.parent / "job.toml"
    start = len(server.requests())
    again = smartmix("run", "--config", config, "--data", items_csv, "-q")
    assert again.returncode == 0, again.stderr
    assert f"Resuming run {clean.run_id}" in again.stdout
    assert server.requests()[start:] == []  # everything read back from the journal: not even a request
    assert columns(read_answers(clean.run_dir, clean.run_id), "id", "answer", "model") == columns(
        clean.answers, "id", "answer", "model"
    )

    start = len(server.requests())
    other = smartmix("run", "--config", config, "--data", items_csv, "-q", "--no-cache", "--seed", "1")
    assert other.returncode == 0, other.stderr
    assert run_id_of(other.stdout) != clean.run_id
    new_paid = [e for e in server.requests()[start:] if e["paid"]]
    assert len(new_paid) >= 0.5 * len(paid)  # paid again, not served from the cache
    assert_no_key_leak(clean.stdout, clean.stderr, again.stdout, again.stderr, other.stdout, other.stderr,
                       logs.stdout, files=[p for p in clean.run_dir.rglob("*") if p.is_file()])


def _phases(journal: Path) -> dict[str, int]:
    if not journal.exists():
        return {}
    try:
        with sqlite3.connect(journal, timeout=5) as db:
            return dict(db.execute("SELECT phase, COUNT(*) FROM calls GROUP BY phase").fetchall())
    except sqlite3.Error:  # created but not migrated yet
        return {}


def _run_until_killed(
    args: list, journal: Path, when: Callable[[dict[str, int]], bool], what: str
) -> tuple[float, float]:
    """Start ``smartmix run``; SIGKILL it once ``when(calls per phase)`` holds; return the instants just
    before the kill and once the process was dead."""
    proc = subprocess.Popen(_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not when(phases := _phases(journal)):
            if proc.poll() is not None or time.monotonic() > deadline:
                out, err = proc.communicate()
                pytest.fail(f"the run ended (or stalled) before {what}: {phases}\n{out}\n{err}")
            time.sleep(0.01)
        t_kill = time.time()  # requests that finished before this were answered to a live client
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        t_dead = time.time()  # read once the process is certainly dead: no request of it starts later
        assert proc.returncode == -signal.SIGKILL
        return t_kill, t_dead
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill9_in_profiling_and_in_application_then_resume(server, clean, items_csv, tmp_path):
    run_dir = tmp_path / "runs"
    journal = run_dir / "journal.sqlite"
    # slow answers, and a cheap model answering 4 at a time, keep each phase long enough to be caught
    config = write_config(tmp_path / "job.toml", server.base_url, run_dir, cheap_concurrency=4)
    args = ["run", "--config", config, "--data", items_csv, "-q"]
    start = len(server.requests())
    server.control("delay", seconds=0.05)
    try:
        # 45 is mid-batch (batches are 10 items x 2-3 models): calls are in flight at the kill
        kills = [_run_until_killed(args, journal, lambda p: p.get("profiling", 0) >= 45, "45 profiling calls")]
        after_first = _phases(journal)
        assert after_first.get("application", 0) == 0, after_first  # the first kill landed in profiling
        kills.append(_run_until_killed(args, journal, lambda p: p.get("application", 0) >= 20, "application"))
        assert _phases(journal)["profiling"] > after_first["profiling"]
        final = smartmix(*args)
    finally:
        server.control("delay", seconds=0)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "Resuming run" in final.stdout
    run_id = run_id_of(final.stdout)
    answers = read_answers(run_dir, run_id)
    assert len(answers) == N_ITEMS and all(a["error"] is None and a["answer"] in ("yes", "no") for a in answers)
    assert columns(answers, "id", "answer", "model", "phase") == columns(clean.answers, "id", "answer", "model", "phase")

    entries = server.requests()[start:]
    paid = paid_keys(entries)
    # Exactly the requests of an uninterrupted run were paid for, each at least once ...
    assert set(paid) == set(paid_keys(clean.requests))
    # ... and the only ones paid twice were in flight at a kill: the server answered after the client died.
    first_paid = {}
    for e in entries:
        if e["paid"]:
            first_paid.setdefault((e["model"], e["prompt"]), e)
    twice = [k for k, n in paid.items() if n > 1]
    assert all(n <= 2 for n in paid.values())
    for key in twice:
        e = first_paid[key]
        # it started before the process was dead and finished no earlier than just before the kill
        assert any(e["t"] <= t_dead and e["t_done"] >= t_kill - 0.5 for t_kill, t_dead in kills), (key, e, kills)
    assert len(twice) <= 2 * 32  # at most the calls in flight (run.concurrency) at each of the two kills
    with sqlite3.connect(journal) as db:  # the client itself never recorded (= received) a request twice
        dup = db.execute("SELECT request_hash FROM calls WHERE run_id = ? GROUP BY request_hash "
                         "HAVING COUNT(*) > 1", (run_id,)).fetchall()
    assert dup == []
    assert_no_key_leak(final.stdout, final.stderr, files=[p for p in run_dir.rglob("*") if p.is_file()])


def _in_process_run(server, config: Path, items_csv: Path, journal_path: Path):
    """The CLI's run, in-process, with retries that back off in milliseconds."""
    import smartmix.api
    from smartmix.backends.retry import Backoff
    from smartmix.config import load_config
    from smartmix.engine import EngineOptions
    from smartmix.journal import Journal

    cfg = load_config(config)
    job = smartmix.api.config_job(cfg, items_csv)
    pool_backend = getattr(job.backend, "inner", job.backend)
    for backend in pool_backend.backends.values():
        backend.backoff = Backoff(base_s=0.01, max_s=0.05, max_retry_after_s=0.2)
    with Journal(journal_path) as journal:
        journal.start_run("faults", {"test": True}, 0)
        return smartmix.api.run(job=job, target=cfg.target, confidence=cfg.confidence, method=cfg.method, seed=0,
                       options=EngineOptions(concurrency=32, params={"max_tokens": cfg.max_tokens}),
                       journal=journal, run_id="faults")


def test_half_of_all_requests_fail_and_the_run_still_gets_it_right(server, clean, items_csv, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, GOOD_KEY)
    config = write_config(tmp_path / "job.toml", server.base_url, tmp_path / "runs", max_attempts=25)
    # the first fault that fires wins: 1/6 + 5/6*1/5 + 5/6*4/5*1/4 = 1/2 of all requests fail
    server.control("fault", kind="rate_limit", fraction=1 / 6, seed=1, retry_after="0.02")
    server.control("fault", kind="error", fraction=1 / 5, seed=2, status=500)
    server.control("fault", kind="drop", fraction=1 / 4, seed=3)
    start = len(server.requests())
    try:
        result = _in_process_run(server, config, items_csv, tmp_path / "journal.sqlite")
    finally:
        server.control("reset")
    got = [{"id": r.id, "answer": r.answer, "model": r.model, "error": r.error} for r in result.items]
    assert not result.failures
    assert columns(got, "id", "answer", "model") == columns(clean.answers, "id", "answer", "model")
    entries = server.requests()[start:]
    outcomes = collections.Counter(e.get("outcome") for e in entries)
    assert outcomes["rate_limit"] and outcomes["error"] and outcomes["drop"], outcomes
    failed = sum(not e["paid"] for e in entries)
    assert 0.4 < failed / len(entries) < 0.6, outcomes
    assert max(paid_keys(entries).values()) == 1  # a failed attempt is not paid; a retry is paid once
    assert result.total_cost == pytest.approx(clean.certificate["total_cost_usd"], rel=1e-9)


def test_a_candidate_that_always_fails_is_never_chosen(server, clean, items_csv, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, GOOD_KEY)
    config = write_config(tmp_path / "job.toml", server.base_url, tmp_path / "runs", max_attempts=2)
    server.control("fault", kind="error", fraction=1.0, status=503, model="cheap")
    start = len(server.requests())
    try:
        result = _in_process_run(server, config, items_csv, tmp_path / "journal.sqlite")
    finally:
        server.control("reset")
    assert not result.failures and all(r.answer in ("yes", "no") for r in result.items)
    assert all(r.model != "cheap" for r in result.items)
    assert result.certificate.bounds.get("cheap", 0.0) == 0.0  # its failures never counted as agreeing
    entries = server.requests()[start:]
    assert not any(e["paid"] for e in entries if e["model"] == "cheap")
    assert result.total_cost == pytest.approx(sum(billed(e) for e in entries if e["paid"]), rel=1e-9)
    assert ("cheap", "profiling") not in result.ledger.entries or result.ledger.entries[("cheap", "profiling")] == 0


def test_a_provider_that_reports_no_usage_is_still_billed_once(server, clean, items_csv, tmp_path, monkeypatch):
    """Some local servers leave out ``usage``: the paid answer is priced from estimated tokens, not lost."""
    import smartmix.api

    class NoUsage:
        def __init__(self, inner):
            self.inner = inner

        async def complete(self, request):
            completion = await self.inner.complete(request)
            completion.input_tokens = completion.output_tokens = None
            return completion

        async def aclose(self):
            await self.inner.aclose()

    real_config_job = smartmix.api.config_job
    monkeypatch.setattr(smartmix.api, "config_job", lambda *a, **k: _wrap(real_config_job(*a, **k), NoUsage))
    monkeypatch.setenv(KEY_ENV, GOOD_KEY)
    config = write_config(tmp_path / "job.toml", server.base_url, tmp_path / "runs")
    start = len(server.requests())
    result = _in_process_run(server, config, items_csv, tmp_path / "journal.sqlite")
    assert not result.failures and result.total_cost > 0
    assert columns([vars(r) for r in result.items], "id", "answer", "model") == columns(clean.answers, "id", "answer", "model")
    assert max(paid_keys(server.requests()[start:]).values()) == 1
    from smartmix.journal import Journal

    with Journal(tmp_path / "journal.sqlite") as journal:
        calls = journal.calls("faults")
    assert calls and all(c["extra"]["usage_estimated"] and c["cost_usd"] > 0 for c in calls)


def _wrap(job, wrapper):
    job.backend = wrapper(job.backend)
    return job


def test_the_example_job_file_is_valid():
    from smartmix.config import build_pool, load_config

    config = load_config(REPO / "examples" / "job.toml")
    pool = build_pool(config)
    assert pool.reference.name == "gpt-4o" and len(pool) == 4 and config.max_cost == 5.0
    assert "{text}" in config.template and config.labels == ["positive", "negative"]


def test_a_reference_that_always_fails(server, items_csv, tmp_path):
    run_dir = tmp_path / "runs"
    config = write_config(tmp_path / "job.toml", server.base_url, run_dir, reference_key_env=BAD_KEY_ENV)
    start = len(server.requests())
    r = smartmix("run", "--config", config, "--data", items_csv, "-q")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "300 item(s) failed" in r.stderr and "HTTP 401" in r.stderr and BAD_KEY_ENV in r.stderr
    assert "Traceback" not in r.stderr
    run_id = run_id_of(r.stdout)
    answers = read_answers(run_dir, run_id)
    assert len(answers) == N_ITEMS
    assert all(a["answer"] is None and a["model"] is None and "401" in a["error"] for a in answers)
    cert = json.loads((run_dir / run_id / "certificate.json").read_text())
    assert cert["failed_items"] == N_ITEMS and cert["target"] == 0.0  # nothing is claimed to agree
    assert cert["shares"] == {"(failed)": 1.0}
    entries = server.requests()[start:]
    refused = [e for e in entries if e["model"] == "big"]
    assert refused and all(e["status"] == 401 and not e["paid"] for e in refused)
    assert len(refused) == N_ITEMS  # a 401 is not retried
    assert cert["total_cost_usd"] == pytest.approx(sum(billed(e) for e in entries if e["paid"]), rel=1e-9)
    assert_no_key_leak(r.stdout, r.stderr, files=[p for p in run_dir.rglob("*") if p.is_file()])


def test_max_cost_stops_below_the_cap_and_a_rerun_pays_only_the_rest(server, clean, items_csv, tmp_path):
    run_dir = tmp_path / "runs"
    config = write_config(tmp_path / "job.toml", server.base_url, run_dir)
    cap = round(0.4 * clean.certificate["total_cost_usd"], 6)
    start = len(server.requests())
    first = smartmix("run", "--config", config, "--data", items_csv, "-q", "--max-cost", str(cap))
    assert first.returncode == 4, first.stdout + first.stderr
    message = " ".join(first.stderr.split())
    assert "--max-cost" in message and "rerun the same command with a higher --max-cost" in message
    assert "Traceback" not in first.stderr
    middle = len(server.requests())
    spent = sum(billed(e) for e in server.requests()[start:middle] if e["paid"])
    assert 0.5 * cap < spent <= cap  # stopped before crossing the cap, not long before it
    second = smartmix("run", "--config", config, "--data", items_csv, "-q", "--max-cost", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Resuming run" in second.stdout
    entries = server.requests()[start:]
    assert paid_keys(entries) == paid_keys(clean.requests)  # together: exactly one uninterrupted run's calls
    total = sum(billed(e) for e in entries if e["paid"])
    assert total == pytest.approx(clean.certificate["total_cost_usd"], rel=1e-9)
    answers = read_answers(run_dir, run_id_of(second.stdout))
    assert columns(answers, "id", "answer", "model") == columns(clean.answers, "id", "answer", "model")


def test_bad_input_exits_2_with_one_paragraph(server, items_csv, tmp_path, capsys, monkeypatch):
    from smartmix.cli import main

    monkeypatch.setenv(KEY_ENV, GOOD_KEY)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("id,text\nq1,fine\nq2,one,two,three\nq3,fine\n")
    runs = tmp_path / "runs"
    cases = {
        "missing template field": (
            write_config(tmp_path / "a.toml", server.base_url, runs, template="{text} {topic}"), items_csv, "'topic'"),
        "unknown model": (
            write_config(tmp_path / "b.toml", server.base_url, runs, reference="gpt-nonexistent"), items_csv,
            "gpt-nonexistent"),
        "missing price": (
            write_config(tmp_path / "c.toml", server.base_url, runs, drop_price="mid"), items_csv, "[models.mid]"),
        "malformed CSV row": (write_config(tmp_path / "d.toml", server.base_url, runs), bad_csv, "line 3"),
    }
    start = len(server.requests())
    for name, (config, data, says) in cases.items():  # in-process: the same main() the console script runs
        monkeypatch.setattr(sys, "argv", ["smartmix", "run", "--config", str(config), "--data", str(data), "-q"])
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = capsys.readouterr()
        assert exited.value.code == 2, (name, out, err)
        assert "Traceback" not in err + out, (name, err)
        paragraph = err.strip()
        assert paragraph.startswith("error:") and "\n\n" not in paragraph, (name, err)
        assert says in " ".join(paragraph.split()), (name, err)
    assert server.requests()[start:] == []  # nothing was sent, let alone paid
    # and from the console script itself, once
    r = smartmix("run", "--config", cases["malformed CSV row"][0], "--data", bad_csv, "-q")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr


if __name__ == "__main__":
    _serve(sys.argv[1:])
