"""Money and data integrity against a real OpenAI-compatible server on 127.0.0.1 that counts what it is paid.

Each test is one way a run could pay twice, lose a paid answer, or look right while being wrong:

- the journal serves an answer only for the same endpoint (base URL, provider model), never another's;
- ``--max-cost`` caps the whole run over every attempt, and the bill covers every attempt (``unused``);
- a second process on the same run is refused; a dead process's lock is taken over;
- Ctrl-C / SIGTERM: no new calls, calls in flight journaled, status ``interrupted``, nothing paid twice;
- ``--out`` that is an input is refused before any call; outputs are written whole or not at all;
- command-line mistakes: one line, exit 2, no traceback;
- warnings about money going to waste (labels never given, blank answers, a target only the reference meets);
- identical prompts are paid once, and the bill is what the server was paid.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_server import RunningServer, free_port, run_server

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SRC = REPO / "src"
PRICES = {"cheap": (0.1, 0.4), "big": (10.0, 40.0)}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server() as running:
        yield running


@pytest.fixture
def provider(server: RunningServer) -> Iterator[RunningServer]:
    """The module's server, well-behaved, with an empty request log."""
    server.control.reset()
    yield server
    server.control.reset()


def write_items(path: Path, n: int, *, copies: int = 1) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(n * copies):
            writer.writerow([f"q{i:04d}", f"Is claim number {i % n} about subject {(i % n) * 7 % 13} true?"])
    return path


def write_job(path: Path, base_url: str, run_dir: Path, *, labels=("yes", "no"), max_attempts: int = 2,
              concurrency: int = 8, target: float = 0.9) -> Path:
    lines = ['reference = "big"', ""]
    for name, (p_in, p_out) in PRICES.items():
        lines += [f"[models.{name}]", f'base_url = "{base_url}"', f"max_attempts = {max_attempts}", "timeout_s = 10",
                  f"input_price = {p_in}", f"output_price = {p_out}", ""]
    lines += ["[task]", 'template = "Answer yes or no. {text}"', f"labels = {json.dumps(list(labels))}",
              "max_tokens = 4", "", "[guarantee]", f"target = {target}", "confidence = 0.9", 'method = "mix"', "",
              "[run]", "seed = 0", f"concurrency = {concurrency}", f'dir = "{run_dir.as_posix()}"', ""]
    path.write_text("\n".join(lines))
    return path


def billed(entry: dict) -> float:
    p_in, p_out = PRICES[entry["model"]]
    return (len(entry["prompt"].split()) * p_in + max(1, len(entry["answer"].split())) * p_out) * 1e-6


def paid_twice(entries: list[dict]) -> int:
    counts = collections.Counter((e["model"], e["prompt"]) for e in entries if e["paid"])
    return sum(n - 1 for n in counts.values() if n > 1)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", "NO_COLOR": "1"}


def cli(*args, timeout: float = 120, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smartmix.cli", *map(str, args)], capture_output=True, text=True,
                          env=env(), timeout=timeout, cwd=cwd)


def popen(*args) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "smartmix.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO)


def journal_rows(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(journal, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for_rows(proc: subprocess.Popen, journal: Path, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while journal_rows(journal) < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            pytest.fail(f"the run ended or stalled before {n} journaled calls\n{out}\n{err}")
        time.sleep(0.01)


def run_status(journal: Path) -> list[str]:
    with sqlite3.connect(journal) as db:
        return [r[0] for r in db.execute("SELECT status FROM runs ORDER BY rowid")]


# --------------------------------------------------------------------------------------- 1: the endpoint


def test_an_answer_from_one_endpoint_is_never_served_for_another(provider, tmp_path):
    items = write_items(tmp_path / "items.csv", 40)
    runs = tmp_path / "runs"
    first = cli("run", "--config", write_job(tmp_path / "a.toml", provider.base_url, runs), "--data", items, "-q")
    assert first.returncode == 0, first.stdout + first.stderr
    assert provider.control.paid
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    other = cli("run", "--config", write_job(tmp_path / "b.toml", closed, runs, max_attempts=1), "--data", items, "-q")
    # every call fails: the answers the other server gave to models of the same name are not reused
    assert other.returncode == 3, other.stdout + other.stderr
    assert "40 item(s) failed" in other.stderr and "Traceback" not in other.stderr
    with sqlite3.connect(runs / "journal.sqlite") as db:
        runs_seen = db.execute("SELECT COUNT(DISTINCT run_id) FROM calls").fetchone()[0]
    assert runs_seen == 1  # nothing was recorded for the closed endpoint


def test_the_request_hash_covers_the_endpoint():
    from smartmix.domain import Message, Request
    from smartmix.journal import request_hash

    a = Request("m", (Message("user", "2+2?"),), endpoint="openai-compatible chat http://127.0.0.1:1/v1 m")
    b = Request("m", (Message("user", "2+2?"),), endpoint="openai-compatible chat http://127.0.0.1:2/v1 m")
    assert request_hash(a) != request_hash(b)
    assert request_hash(a) == request_hash(Request("m", a.messages, item_id="x", endpoint=a.endpoint))


# ------------------------------------------------------------------------------ 2: cap and bill, all attempts


def test_max_cost_and_the_bill_cover_every_attempt_of_a_run(provider, tmp_path):
    import smartmix
    from smartmix.errors import BudgetExceeded
    from smartmix.journal import Journal

    items = write_items(tmp_path / "items.csv", 200)
    job = write_job(tmp_path / "job.toml", provider.base_url, tmp_path / "runs")
    cap = 0.008  # about 30% of what the reference alone costs here
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.start_run("r", {}, 0)
        common = dict(config=job, journal=journal, run_id="r", handle_signals=False)
        with pytest.raises(BudgetExceeded):
            smartmix.run(items, seed=0, max_cost=cap, **common)
        first = sum(map(billed, provider.control.paid))
        assert 0.5 * cap < first <= cap
        # a second attempt of the same run with another plan (another seed): the cap still holds in total
        with pytest.raises(BudgetExceeded):
            smartmix.run(items, seed=1, max_cost=cap, **common)
        assert sum(map(billed, provider.control.paid)) <= cap + 1e-12
        result = smartmix.run(items, seed=1, **common)  # no cap: completes
        server = sum(map(billed, provider.control.paid))
        recorded = sum(c["cost_usd"] for c in journal.calls("r"))
    assert paid_twice(provider.control.log) == 0
    assert result.total_cost == pytest.approx(server, rel=1e-9) == pytest.approx(recorded, rel=1e-9)
    assert sum(r.cost for r in result.items) == pytest.approx(result.total_cost, rel=1e-9)
    unused = {p: c for (m, p), c in result.ledger.entries.items() if p == "unused"}
    assert unused and unused["unused"] > 0  # paid under the first plan, not used by the last one
    assert sum(result.ledger.calls.values()) == len(provider.control.paid)


# ---------------------------------------------------------------------------------- 3: one process per run


def test_a_second_process_on_the_same_run_is_refused_and_a_dead_ones_lock_is_taken_over(provider, tmp_path):
    items = write_items(tmp_path / "items.csv", 120)
    runs = tmp_path / "runs"
    args = ["run", "--config", write_job(tmp_path / "job.toml", provider.base_url, runs), "--data", items, "-q"]
    provider.control.delay_s = 2.0  # the first run lasts minutes: the second starts while it runs
    first = popen(*args)
    try:
        wait_for_rows(first, runs / "journal.sqlite", 5)
        second = cli(*args, timeout=60)
        assert second.returncode == 5, second.stdout + second.stderr
        assert "already running" in second.stderr and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) <= 3
        # the first one is killed without a chance to clean up: its lock dies with it
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    provider.control.delay_s = 0.0
    third = cli(*args)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "Resuming run" in third.stdout
    # the only requests paid twice were in flight when the first process was killed (concurrency 8)
    assert paid_twice(provider.control.log) <= 8


# ------------------------------------------------------------------------------------------- 4: signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_cleanly_and_the_rerun_pays_nothing_twice(provider, tmp_path, signum):
    items = write_items(tmp_path / "items.csv", 150)
    runs = tmp_path / "runs"
    journal = runs / "journal.sqlite"
    args = ["run", "--config", write_job(tmp_path / "job.toml", provider.base_url, runs, concurrency=16),
            "--data", items, "-q"]
    provider.control.delay_s = 0.1
    proc = popen(*args)
    try:
        wait_for_rows(proc, journal, 30)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "rerun the same command" in " ".join(err.lower().split()), err
    assert run_status(journal) == ["interrupted"]
    assert provider.control.in_flight == 0
    # every answer the server was paid for reached the journal
    assert journal_rows(journal) == len(provider.control.paid)
    provider.control.delay_s = 0.0
    again = cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert paid_twice(provider.control.log) == 0
    assert run_status(journal) == ["done"]
    cert = json.loads(next(runs.glob("*/certificate.json")).read_text())
    assert cert["total_cost_usd"] == pytest.approx(sum(map(billed, provider.control.paid)), rel=1e-9)


def test_a_second_ctrl_c_aborts_at_once(provider, tmp_path):
    items = write_items(tmp_path / "items.csv", 30)
    runs = tmp_path / "runs"
    args = ["run", "--config", write_job(tmp_path / "job.toml", provider.base_url, runs), "--data", items, "-q"]
    provider.control.delay_s = 20.0  # calls in flight would take 20 s to finish
    proc = popen(*args)
    try:
        deadline = time.monotonic() + 180  # starting the CLI can take long on a busy machine
        while provider.control.in_flight < 1:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 12.0  # not waiting for them (exiting the interpreter can take seconds)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, out + err
    assert "abort" in err
    assert run_status(runs / "journal.sqlite") == ["interrupted"]


# --------------------------------------------------------------------------------------- 8: outputs


def test_an_output_that_is_an_input_is_refused_before_any_call(provider, tmp_path):
    items = write_items(tmp_path / "items.csv", 20)
    before = items.read_bytes()
    job = write_job(tmp_path / "job.toml", provider.base_url, tmp_path / "runs")
    for extra in (["--out", "./items.csv"], ["--out", tmp_path / "sub" / ".." / "items.csv"],
                  ["--report", "job.toml"], ["--out", "runs/journal.sqlite"], ["--report", "runs/journal.sqlite"]):
        r = cli("run", "--config", "job.toml", "--data", "items.csv", "-q", *extra, cwd=tmp_path)
        assert r.returncode == 2, (extra, r.stdout, r.stderr)
        assert r.stderr.startswith("error:") and "refusing to write" in r.stderr and "Traceback" not in r.stderr
    assert items.read_bytes() == before
    assert provider.control.requests() == []
    assert "[task]" in job.read_text()


def test_outputs_are_written_whole_or_not_at_all(tmp_path):
    from smartmix.runs import atomic_path

    target = tmp_path / "answers.jsonl"
    target.write_text("the previous answers\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new ans")
        raise RuntimeError("the disk filled up")
    assert target.read_text() == "the previous answers\n"
    assert [p.name for p in tmp_path.iterdir()] == ["answers.jsonl"]  # no temporary file left behind
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n" and len(list(tmp_path.iterdir())) == 1


# ------------------------------------------------------------------------------------ 9: CLI mistakes


@pytest.mark.parametrize("args", [
    ["run", "--bogus"], ["run", "--target", "abc"], ["run", "--data"], ["frobnicate"],
    ["run", "--simulated", "imdb", "--seed", "-1"], ["logs", "--run-dir"], ["router", "train"],
    ["run", "--simulated", "imdb", "--concurrency", "0"],
], ids=lambda a: " ".join(a))
def test_command_line_mistakes_are_one_line_and_exit_2(args):
    r = cli(*args, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("error:"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_logs_of_an_unknown_run_is_an_error(provider, tmp_path):
    items = write_items(tmp_path / "items.csv", 10)
    runs = tmp_path / "runs"
    assert cli("run", "--config", write_job(tmp_path / "j.toml", provider.base_url, runs), "--data", items,
               "-q").returncode == 0
    r = cli("logs", "--run-dir", runs, "0123456789ab")
    assert r.returncode == 2 and "no run '0123456789ab'" in r.stderr and "Traceback" not in r.stderr


def test_logs_never_writes_into_an_empty_journal_file(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "journal.sqlite").write_bytes(b"")
    r = cli("logs", "--run-dir", runs)
    assert r.returncode != 0 and "empty, not a journal" in r.stderr and "Traceback" not in r.stderr
    assert (runs / "journal.sqlite").stat().st_size == 0


def test_no_message_recommends_an_option_or_command_that_does_not_exist():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "--id-field" not in text and "router tune" not in text, path


# ---------------------------------------------------------------------------------------- 10: waste


def test_money_going_to_waste_is_warned_about(provider, tmp_path):
    import smartmix

    items = write_items(tmp_path / "items.csv", 60)

    runs = iter(range(100))

    def go(**job_options):
        run_dir = tmp_path / f"runs-{next(runs)}"
        job = write_job(tmp_path / "job.toml", provider.base_url, run_dir, **job_options)
        return smartmix.run(items, config=job, handle_signals=False)

    typo = go(labels=("yes", "noo"))
    assert any("'noo' never occurred" in w for w in typo.warnings), typo.warnings

    provider.control.set_answers(lambda model, prompt: "")
    blank = go()
    # an empty answer is retried, then fails its item (never a silent paid ""); either way nobody is misled
    assert any("blank" in w for w in blank.warnings) or len(blank.failures) == len(blank.items), blank.warnings

    def cheap_is_wrong_half_the_time(model: str, prompt: str) -> str:
        from openai_server import default_answer

        said = default_answer(model, prompt)
        flip = model == "cheap" and hash(prompt) % 2 == 0
        return ("no" if said == "yes" else "yes") if flip else said

    provider.control.set_answers(cheap_is_wrong_half_the_time)
    only_reference = go(target=0.99)
    # Either the run paid for candidates that turned out useless and says so, or (the never-worse rule) it saw
    # before paying for them that only the reference could do, and its certificate says why.
    warned = any("only the reference can meet this target" in w for w in only_reference.warnings)
    reason = only_reference.certificate.details.get("fallback_reason")
    assert warned or reason, (only_reference.warnings, only_reference.certificate.details)
    assert {r.model for r in only_reference.items} == {"big"}
    if only_reference.total_cost > only_reference.reference_cost:
        assert any("more than the reference alone" in w for w in only_reference.warnings)


# ---------------------------------------------------------------------------------- 11: repeated prompts


def test_identical_prompts_are_paid_once_and_the_bill_is_what_the_server_was_paid(provider, tmp_path):
    import smartmix
    from smartmix.journal import Journal

    items = write_items(tmp_path / "items.csv", 50, copies=3)  # 150 items, 50 distinct prompts
    runs = tmp_path / "runs"
    result = smartmix.run(items, config=write_job(tmp_path / "job.toml", provider.base_url, runs, concurrency=32),
                          handle_signals=False)
    paid = provider.control.paid
    assert paid_twice(paid) == 0
    assert len(result.items) == 150 and not result.failures
    by_text = collections.defaultdict(set)
    for r in result.items:
        by_text[int(r.id[1:]) % 50].add(r.answer)
    assert all(len(answers) == 1 for answers in by_text.values())  # every copy got the answer
    with Journal(runs / "journal.sqlite") as journal:
        recorded = sum(c["cost_usd"] for c in journal.calls(result.run_id))
        rows = len(journal.calls(result.run_id))
    assert result.total_cost == pytest.approx(sum(map(billed, paid)), rel=1e-9) == pytest.approx(recorded, rel=1e-9)
    assert sum(result.ledger.calls.values()) == len(paid) == rows
    assert sum(r.cost for r in result.items) == pytest.approx(result.total_cost, rel=1e-9)


# --------------------------------------------------------------------- the Python API owns the run (issue 13)


def test_the_python_api_runs_a_job_file_and_resumes_like_the_cli(provider, tmp_path):
    import smartmix

    items = write_items(tmp_path / "items.csv", 40)
    runs = tmp_path / "runs"
    job = write_job(tmp_path / "job.toml", provider.base_url, runs)
    notices: list[str] = []
    first = smartmix.run(items, config=job, on_event=notices.append, handle_signals=False)
    paid = len(provider.control.paid)
    assert paid and first.run_id and notices == [f"Run {first.run_id} (journal: {runs / 'journal.sqlite'})."]
    assert (first.outputs / "answers.jsonl").exists() and (first.outputs / "certificate.json").exists()
    again = smartmix.run(items, config=job, on_event=notices.append, handle_signals=False)
    assert again.run_id == first.run_id and notices[-1].startswith(f"Resuming run {first.run_id}")
    assert len(provider.control.paid) == paid  # read back from the journal, nothing paid again
    assert [r.answer for r in again.items] == [r.answer for r in first.items]
    assert again.total_cost == pytest.approx(first.total_cost, rel=1e-12)
    cli_run = cli("run", "--config", job, "--data", items, "-q")  # the CLI resumes the same run
    assert cli_run.returncode == 0 and f"Resuming run {first.run_id}" in cli_run.stdout, cli_run.stderr
    assert len(provider.control.paid) == paid
