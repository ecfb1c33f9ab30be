"""The SQLite journal: record, resume, cache, durability, totals, speed."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from smartmix.domain import Completion, Message, Request
from smartmix.errors import ConfigError
from smartmix.journal import SCHEMA_VERSION, Journal, RunSummary, request_hash, scrub_secrets


def req(prompt: str = "2+2?", model: str = "small", item_id: str | None = "i1", **params) -> Request:
    return Request(model, (Message("system", "Answer briefly."), Message("user", prompt)), item_id,
                   tuple(sorted(params.items())))


def comp(text: str = "4", model: str = "small", **kw) -> Completion:
    base = dict(input_tokens=12, output_tokens=1, top_logprobs=(("4", -0.01), ("5", -4.2)), confidence=-0.01,
                latency_ms=123.4, extra={"attempts": 2, "finish_reason": "stop"})
    base.update(kw)
    return Completion(model=model, text=text, **base)


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "runs" / "r1" / "journal.sqlite")
    yield j
    j.close()


def test_request_hash_covers_model_messages_params_not_item_id():
    base = req()
    assert request_hash(base) == request_hash(req(item_id="other"))
    assert request_hash(base) != request_hash(req(model="big"))
    assert request_hash(base) != request_hash(req(prompt="2+3?"))
    assert request_hash(base) != request_hash(req(max_tokens=5))
    a = Request("m", base.messages, params=(("max_tokens", 5), ("logprobs", True)))
    b = Request("m", base.messages, params=(("logprobs", True), ("max_tokens", 5)))
    assert request_hash(a) == request_hash(b)
    swapped = Request("small", (Message("user", "Answer briefly."), Message("system", "2+2?")), "i1")
    assert request_hash(base) != request_hash(swapped)


def test_wal_mode_and_schema_version(journal):
    db = sqlite3.connect(journal.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert journal.schema_version == SCHEMA_VERSION
    db.close()


def test_record_then_lookup_round_trips(journal):
    assert journal.start_run("r1", {"task": "math", "target": 0.9}, seed=7) is False
    assert journal.lookup(req(), run_id="r1") is None
    journal.record("r1", req(), comp(), phase="profiling", cost_usd=0.0012)
    hit = journal.lookup(req(), run_id="r1")
    assert hit is not None
    assert (hit.model, hit.text, hit.input_tokens, hit.output_tokens) == ("small", "4", 12, 1)
    assert hit.top_logprobs == (("4", -0.01), ("5", -4.2))
    assert hit.confidence == -0.01 and hit.latency_ms == 123.4 and hit.cost_usd == pytest.approx(0.0012)
    assert hit.extra["attempts"] == 2 and hit.extra["finish_reason"] == "stop"
    assert hit.extra["from_journal"] is True and hit.extra["journal_run_id"] == "r1"
    assert hit.extra["journal_phase"] == "profiling"
    # the same prompt for another item is the same request
    assert journal.lookup(req(item_id="i2"), run_id="r1").text == "4"
    [call] = journal.calls("r1")
    assert call["item_id"] == "i1" and call["phase"] == "profiling" and call["attempts"] == 2
    assert call["top_logprobs"] == [["4", -0.01], ["5", -4.2]] and call["request_hash"] == request_hash(req())


def test_lookup_without_logprobs_or_usage(journal):
    journal.start_run("r1", {}, seed=0)
    journal.record("r1", req("x"), Completion("small", "y"), phase="application", cost_usd=0.0)
    hit = journal.lookup(req("x"))
    assert hit.text == "y" and hit.top_logprobs is None and hit.input_tokens is None and hit.confidence is None


def test_resume_sees_only_this_run_cache_sees_any(journal):
    journal.start_run("old", {"x": 1}, seed=1)
    journal.record("old", req(), comp("4"), phase="application", cost_usd=0.5)
    journal.finish_run("old", "done")
    assert journal.start_run("new", {"x": 1}, seed=1) is False
    assert journal.lookup(req(), run_id="new") is None  # resume: not paid in this run
    cached = journal.lookup(req())  # cache: paid by some run
    assert cached.text == "4" and cached.extra["journal_run_id"] == "old"
    journal.record("new", req(), comp("four"), phase="application", cost_usd=0.0)
    assert journal.lookup(req(), run_id="new").text == "four"
    assert journal.lookup(req(), run_id="old").text == "4"
    assert journal.lookup(req()).text == "four"  # the latest answer wins for the cache


def test_start_run_again_is_a_resume(tmp_path):
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        assert j.start_run("r", {"a": 1}, seed=3) is False
        j.record("r", req(), comp(), phase="profiling", cost_usd=0.25)
        j.finish_run("r", "interrupted")
    with Journal(path) as j:
        assert j.start_run("r", {"a": 2}, seed=9) is True
        summary = j.run("r")
        assert summary.status == "running" and summary.seed == 3 and summary.config == {"a": 1}
        assert summary.n_calls == 1


def test_durable_after_reopening_and_after_a_killed_process(tmp_path):
    path = tmp_path / "j.sqlite"
    writer = Journal(path)
    writer.start_run("r", {}, seed=0)
    writer.record("r", req("a"), comp("A"), phase="profiling", cost_usd=0.1)
    reader = Journal(path)  # another connection sees it at once: committed, not buffered
    assert reader.lookup(req("a"), run_id="r").text == "A"
    reader.close()
    writer.close()

    # A process that records and dies without closing anything.
    script = textwrap.dedent(f"""
        import os
        from smartmix.domain import Completion, Message, Request
        from smartmix.journal import Journal
        j = Journal({str(path)!r})
        j.start_run("crashed", {{}}, seed=1)
        for i in range(50):
            j.record("crashed", Request("m", (Message("user", f"q{{i}}"),)), Completion("m", f"a{{i}}"),
                     phase="application", cost_usd=0.01)
        os._exit(1)
    """)
    subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    with Journal(path) as j:
        assert len(j.calls("crashed")) == 50
        assert j.lookup(Request("m", (Message("user", "q49"),)), run_id="crashed").text == "a49"
        assert j.run("crashed").status == "running"  # never finished: the engine can tell it crashed


def test_runs_totals(journal):
    journal.start_run("a", {"pool": ["small", "big"]}, seed=1)
    journal.start_run("b", {}, seed=2)
    journal.record("a", req("1"), comp(), phase="profiling", cost_usd=0.25)
    journal.record("a", req("2"), comp(), phase="application", cost_usd=0.5)
    journal.record("b", req("3"), comp(), phase="application", cost_usd=1.0)
    journal.finish_run("a", "done")
    runs = {r.run_id: r for r in journal.runs()}
    assert isinstance(runs["a"], RunSummary)
    assert (runs["a"].status, runs["a"].n_calls, runs["a"].cost_usd) == ("done", 2, pytest.approx(0.75))
    assert (runs["b"].status, runs["b"].n_calls, runs["b"].cost_usd) == ("running", 1, pytest.approx(1.0))
    assert runs["a"].config == {"pool": ["small", "big"]} and runs["a"].seed == 1
    stored = sqlite3.connect(journal.path).execute("SELECT cost_usd FROM runs WHERE run_id = 'a'").fetchone()[0]
    assert stored == pytest.approx(0.75)


def test_secrets_never_reach_the_journal(journal):
    config = {"api_key": "sk-live-abcdefghijklmnop", "endpoints": [{"api_key_env": "OPENAI_API_KEY",
              "headers": {"Authorization": "Bearer sk-xyz"}, "note": "sk-proj-ABCDEFGHIJKL"}], "target": 0.9}
    journal.start_run("r", config, seed=0)
    raw = Path(journal.path).read_bytes() + Path(str(journal.path) + "-wal").read_bytes()
    assert b"sk-live" not in raw and b"sk-xyz" not in raw and b"sk-proj-ABCD" not in raw
    assert journal.run("r").config == {"endpoints": [{"api_key_env": "OPENAI_API_KEY", "headers": {}, "note": "***"}],
                                        "target": 0.9}
    assert scrub_secrets({"token_limit": 5}) == {}  # over-eager by design: better than leaking


def test_errors_say_what_to_do(journal, tmp_path):
    with pytest.raises(ConfigError, match="start_run"):
        journal.record("never-started", req(), comp(), phase="profiling", cost_usd=0.0)
    with pytest.raises(ConfigError, match="no run"):
        journal.finish_run("never-started", "done")
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="journal"):
        Journal(bad)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?, 'future')", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="newer"):
        Journal(path)


def test_committed_writes_per_second(journal):
    journal.start_run("speed", {}, seed=0)
    n = 5000
    requests = [req(f"question {i}", item_id=str(i)) for i in range(n)]
    completion = comp()
    t0 = time.perf_counter()
    for r in requests:
        journal.record("speed", r, completion, phase="application", cost_usd=0.0001)
    elapsed = time.perf_counter() - t0
    print(f"\njournal: {n / elapsed:,.0f} committed writes/s ({elapsed * 1e6 / n:.0f} us each, WAL, synchronous=NORMAL)")
    assert len(journal.calls("speed")) == n


# ------------------------------------------------------------------ the one writer, and two threads


def test_a_writer_thread_and_another_threads_reads_and_writes_share_the_journal(journal):
    """The engine's layout: a BackgroundJournalWriter commits from its thread while the caller's thread looks
    calls up, lists them and commits its own; one connection, one lock, no interleaved transaction."""
    from smartmix.journal_writer import BackgroundJournalWriter

    journal.start_run("w", {}, seed=0)
    journal.start_run("m", {}, seed=0)
    writer = BackgroundJournalWriter(journal, "w", max_batch=8)
    n = 3000
    for i in range(n):
        writer.record(req(f"w{i}", item_id=str(i)), comp(f"a{i}"), "application", 0.001)
    listed = []
    for i in range(300):
        journal.record("m", req(f"m{i}"), comp(), phase="profiling", cost_usd=0.002)
        assert journal.lookup(req(f"m{i}"), run_id="m") is not None
        assert journal.schema_version == SCHEMA_VERSION
        listed.append(len(journal.paid_calls("w")))
    writer.close()
    assert writer.written == n and writer.failed == 0
    assert listed == sorted(listed)  # rows appear whole batches at a time, never go away
    assert len(journal.calls("w")) == n and len(journal.paid_calls("m")) == 300
    assert [c["answer"] for c in journal.calls("w")] == [f"a{i}" for i in range(n)]  # in the order queued


class _UniqueAnswers:
    """An in-process provider: every call gets its own answer text ("<model>:<prompt>")."""

    async def complete(self, request: Request) -> Completion:
        await asyncio.sleep(0)
        return Completion(request.model, f"{request.model}:{request.messages[-1].content}", input_tokens=10,
                          output_tokens=2, extra={"attempts": 1})


def _engine(journal, run_id, comparator=None):
    from smartmix.engine import Engine, EngineOptions
    from smartmix.models import ModelSpec, Pool
    from smartmix.tasks import ExactComparator, Template

    pool = Pool([ModelSpec("small", 1e-7, 2e-7), ModelSpec("big", 1e-5, 2e-5)], "big")
    return Engine(_UniqueAnswers(), pool, Template(user="{text}"), comparator or ExactComparator(),
                  options=EngineOptions(concurrency=32, chunk=64), journal=journal, run_id=run_id)


def test_the_engine_uses_no_answer_before_it_is_committed(journal):
    """Every answer the engine reads (its comparator parses it) is already committed: seen from another
    SQLite connection, which sees committed rows only."""
    from smartmix.policies import Guarantee
    from smartmix.tasks import ExactComparator, Item

    reader = sqlite3.connect(journal.path)
    parsed = []

    class Checking(ExactComparator):
        def parse(self, text):
            if text is not None and ":" in text:  # a raw answer, not one already parsed
                assert reader.execute("SELECT COUNT(*) FROM calls WHERE answer = ?", (text,)).fetchone()[0] == 1
                parsed.append(text)
            return super().parse(text)

    journal.start_run("r", {}, seed=0)
    items = [Item(str(i), {"text": f"q{i}"}) for i in range(400)]
    result = asyncio.run(_engine(journal, "r", Checking()).run(items, "mix", Guarantee(0.9, 0.95)))
    reader.close()
    calls = journal.calls("r")
    assert len(parsed) >= len(items) and len(calls) == sum(result.ledger.calls.values())
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(result.total_cost)
    assert not any(t.name == "smartmix-journal" for t in threading.enumerate())  # the run's writer is gone


def test_a_journal_that_cannot_store_the_answers_stops_the_run(journal):
    """A row the journal refuses (here: a run it was never told about) fails its call, and the run."""
    from smartmix.policies import Guarantee
    from smartmix.tasks import Item

    items = [Item(str(i), {"text": f"q{i}"}) for i in range(50)]
    with pytest.raises(ConfigError, match="not started"):
        asyncio.run(_engine(journal, "never-started").run(items, "reference", Guarantee(0.9, 0.95)))
    assert not any(t.name == "smartmix-journal" for t in threading.enumerate())
