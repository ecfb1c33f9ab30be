"""Streamed replays and simulations: the engine's plans, answers, costs and certificates, read and written
in chunks.

The engine side is the live engine replaying the recorded file through its whole call path; the streamed
side reads the same file into columns and runs the same driver over them. Every comparison is on real
recorded outputs from ../shared/data (skipped when absent) or on the simulated backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smartmix.api import replay_job
from smartmix.engine import Engine, EngineOptions
from smartmix.errors import DataError
from smartmix.policies import Guarantee
from smartmix.stream.run import replay, simulate_streamed

REPO = Path(__file__).resolve().parents[1]
SETS = {"mmlu-qwen-oai": ("gpt-4o", 0.9), "triviaqa-llama": ("llama3.1-405b", 0.85)}


def engine_run(path, reference, target, method, seed, labels=None, compare=None, compare_options=None):
    job = replay_job(path, reference=reference, labels=labels, compare=compare, compare_options=compare_options)
    engine = Engine(job.backend, job.pool, job.template, job.comparator, options=EngineOptions(use_cache=False))
    result = asyncio.run(engine.run(job.items, method, Guarantee(target, 0.95), seed=seed))
    return result, engine.execution, job.comparator


def streamed_run(path, reference, target, method, seed, comparator, chunk=65_536):
    return replay(path, comparator=comparator, guarantee=Guarantee(target, 0.95), method=method, seed=seed,
                  options=EngineOptions(), reference=reference, chunk=chunk)


def assert_same_run(live, execution, streamed):
    a, b = execution.plan, streamed.execution.plan
    np.testing.assert_array_equal(a.assignment, b.assignment)
    np.testing.assert_array_equal(a.profiled, b.profiled)
    assert a.chain == b.chain and a.thresholds == b.thresholds
    assert (a.entry is None) == (b.entry is None)
    if a.entry is not None:
        np.testing.assert_array_equal(a.entry, b.entry)
    dump = lambda c: json.dumps(c.__dict__, sort_keys=True, default=repr)  # noqa: E731
    assert dump(live.certificate) == dump(streamed.certificate)
    rows = list(streamed.items)
    assert len(rows) == len(live.items) == len(streamed.items)
    assert [(r.id, r.model, r.answer, r.phase, r.error) for r in rows] == [
        (r.id, r.model, r.answer, r.phase, r.error) for r in live.items
    ]
    assert [r.cost for r in rows] == [r.cost for r in live.items]  # exactly: the same additions per item
    assert dict(streamed.ledger.calls) == dict(live.ledger.calls)
    assert streamed.ledger.entries.keys() == live.ledger.entries.keys()
    for key, cost in live.ledger.entries.items():
        assert streamed.ledger.entries[key] == pytest.approx(cost, rel=1e-12, abs=1e-15)
    assert streamed.reference_cost == pytest.approx(live.reference_cost, rel=1e-12)
    assert streamed.reference_cost_measured == live.reference_cost_measured
    assert streamed.warnings == live.warnings
    assert streamed.failures == live.failures == []


@pytest.fixture(scope="module", params=sorted(SETS))
def recorded(request, shared_data):
    reference, target = SETS[request.param]
    return shared_data / request.param / "test.jsonl", reference, target


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("method", ["cascade", "mix", "efficient"])
def test_streamed_replay_equals_the_engine(recorded, method, seed):
    path, reference, target = recorded
    live, execution, comparator = engine_run(path, reference, target, method, seed)
    streamed = streamed_run(path, reference, target, method, seed, comparator)
    assert_same_run(live, execution, streamed)


def test_streamed_replay_with_labels_and_a_tolerant_comparator(shared_data):
    """Labels (answers reported as the canonical label) and a comparator whose agreement is not equality."""
    path = shared_data / "mmlu-llama" / "test.jsonl"
    live, execution, comparator = engine_run(path, "llama3.1-405b", 0.8, "mix", 0, labels=["A", "B", "C", "D"])
    assert_same_run(live, execution, streamed_run(path, "llama3.1-405b", 0.8, "mix", 0, comparator))
    live, execution, comparator = engine_run(path, "llama3.1-405b", 0.8, "cascade", 2, compare="numeric",
                                             compare_options={"rel_tol": 0.01})
    assert_same_run(live, execution, streamed_run(path, "llama3.1-405b", 0.8, "cascade", 2, comparator))


def test_chunk_boundaries_change_nothing(shared_data, tmp_path):
    """Chunks of 7 lines, blank lines, a model seen first in a later chunk (not in the pool): same run."""
    rows = [json.loads(line) for line in open(shared_data / "triviaqa-qwen-oai" / "test.jsonl")][:300]
    rows[40]["outputs"]["late-model"] = {"answer": "x", "cost_usd": 1e-6}
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + ("\n\n" if i % 13 == 0 else "\n") for i, r in enumerate(rows)))
    models = ["gpt-4o-mini", "qwen2.5-72b-instruct"]
    comparator = replay_job(path, reference="gpt-4o").comparator
    runs = [replay(path, comparator=comparator, guarantee=Guarantee(0.8, 0.9), method="mix", seed=3,
                   options=EngineOptions(), reference="gpt-4o", models=models, chunk=chunk) for chunk in (7, 64, 10_000)]
    first = runs[0]
    for other in runs[1:]:
        np.testing.assert_array_equal(first.execution.final, other.execution.final)
        assert first.execution.spent.tolist() == other.execution.spent.tolist()
        assert list(first.items) == list(other.items)
        assert first.certificate == other.certificate
    assert len(first.items) == 300 and {r.model for r in first.items} <= {*models, "gpt-4o"}
    for chunk, name in ((7, "a.jsonl"), (10_000, "b.jsonl")):
        runs[0 if chunk == 7 else 2].write(tmp_path / name)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    import gzip

    packed = tmp_path / "items.jsonl.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    again = replay(packed, comparator=comparator, guarantee=Guarantee(0.8, 0.9), method="mix", seed=3,
                   options=EngineOptions(), reference="gpt-4o", models=models, chunk=7)
    assert list(again.items) == list(first.items) and again.certificate == first.certificate


def test_written_answers_are_the_engines_rows(shared_data, tmp_path):
    """The answers file has the engine's columns and values (CSV byte for byte; JSONL costs keep every digit,
    where the engine's writer rounds them to 10 decimals)."""
    path = shared_data / "medmcqa-qwen-oai" / "test.jsonl"
    live, _, comparator = engine_run(path, "gpt-4o", 0.9, "cascade", 0)
    streamed = streamed_run(path, "gpt-4o", 0.9, "cascade", 0, comparator, chunk=100)
    live.write(tmp_path / "live.csv")
    streamed.write(tmp_path / "streamed.csv")
    assert (tmp_path / "live.csv").read_bytes() == (tmp_path / "streamed.csv").read_bytes()
    live.write(tmp_path / "live.jsonl")
    streamed.write(tmp_path / "streamed.jsonl")
    a = [json.loads(line) for line in open(tmp_path / "live.jsonl")]
    b = [json.loads(line) for line in open(tmp_path / "streamed.jsonl")]
    assert [list(r) for r in a] == [list(r) for r in b]  # same columns, same order
    assert [{**r, "cost": None} for r in a] == [{**r, "cost": None} for r in b]
    assert [r["cost"] for r in a] == [round(r["cost"], 10) for r in b]
    streamed.write(tmp_path / "streamed.parquet")
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "streamed.parquet")
    assert frame["id"].tolist() == [r["id"] for r in b] and frame["cost"].tolist() == [r["cost"] for r in b]


def test_streamed_simulation_equals_the_engine(tmp_path):
    from smartmix.api import simulated_job

    job = simulated_job("sms-spam", seed=4, n_items=3000)
    engine = Engine(job.backend, job.pool, job.template, job.comparator)
    live = asyncio.run(engine.run(job.items, "mix", Guarantee(0.85, 0.95), seed=4))
    streamed = simulate_streamed("sms-spam", guarantee=Guarantee(0.85, 0.95), method="mix", seed=4,
                                 options=EngineOptions(), n_items=3000, chunk=500)
    assert_same_run(live, engine.execution, streamed)


def bad_file(tmp_path: Path, n: int = 60, bad_line: int = 41) -> Path:
    path = tmp_path / "bad.jsonl"
    with open(path, "w") as f:
        for i in range(1, n + 1):
            if i == bad_line:
                f.write('{"id": "q41", "prompt": "p", "outputs": {"a": {"answer": "x"}\n')  # cut short
                continue
            outputs = {"a": {"answer": "x", "cost_usd": 1e-5}, "b": {"answer": "x", "cost_usd": 1e-3}}
            f.write(json.dumps({"id": f"q{i}", "prompt": f"p{i}", "outputs": outputs}) + "\n")
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "smartmix.cli", "run", *args, "-q"], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_a_bad_line_stops_the_run_before_any_output(tmp_path):
    """A malformed line: one error naming it, a non-zero exit code, the old answers file untouched, no temp file."""
    path = bad_file(tmp_path)
    out = tmp_path / "answers.jsonl"
    out.write_text("earlier answers\n")
    done = cli("--data", str(path), "--reference", "b", "--method", "cascade", "--out", str(out), "--stream",
               cwd=tmp_path)
    assert done.returncode != 0
    assert "line 41" in done.stderr and "not valid JSON" in done.stderr and "Traceback" not in done.stderr
    assert out.read_text() == "earlier answers\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "bad.jsonl"]


def test_bad_records_name_their_line(tmp_path):
    comparator = replay_job(bad_file(tmp_path, n=3, bad_line=99), reference="b").comparator
    cases = {
        "duplicate item id 'q1'": '{"id": "q1", "prompt": "p", "outputs": {"a": {"answer": "y"}, "b": {"answer": "y"}}}',
        "'cost_usd' must be a number": '{"id": "q9", "prompt": "p", "outputs": {"a": {"answer": "y", "cost_usd": "1"}}}',
        "no 'answer'": '{"id": "q9", "prompt": "p", "outputs": {"a": {"cost_usd": 1}}}',
        "'prompt' must be": '{"id": "q9", "outputs": {"a": {"answer": "y"}}}',
    }
    for message, line in cases.items():
        path = tmp_path / "case.jsonl"
        path.write_text(bad_file(tmp_path, n=3, bad_line=99).read_text() + line + "\n")
        with pytest.raises(DataError, match=f"line 4.*{message}|{message}"):
            replay(path, comparator=comparator, guarantee=Guarantee(0.9), method="mix", seed=0,
                   options=EngineOptions(), reference="b")
    path = tmp_path / "case.jsonl"
    path.write_text(bad_file(tmp_path, n=3, bad_line=99).read_text()
                    + '{"id": "q9", "prompt": "p", "outputs": {"b": {"answer": "y", "cost_usd": 1e-3}}}\n')
    with pytest.raises(DataError, match="model 'a' has no recorded output for the item on line 4"):
        replay(path, comparator=comparator, guarantee=Guarantee(0.9), method="mix", seed=0, options=EngineOptions(),
               reference="b")


def test_the_cli_streams_into_a_run_directory_under_the_engines_run_id(shared_data, tmp_path):
    """Automatic streaming: the same run id as the engine's (so either resumes the other), the outputs in the
    run's folder, the run listed with its status; the answers equal the engine's."""
    from smartmix.journal import Journal

    path = shared_data / "mmlu-qwen-oai" / "test.jsonl"
    args = ["--data", str(path), "--reference", "gpt-4o", "--target", "0.9", "--method", "cascade", "--run-dir", "runs"]
    streamed = cli(*args, cwd=tmp_path)
    assert streamed.returncode == 0, streamed.stderr
    assert "streamed" in streamed.stdout
    with Journal(tmp_path / "runs" / "journal.sqlite") as journal:
        (run,) = journal.runs()
        assert run.status == "done" and run.n_calls == 0
    live = cli(*args, "--no-stream", cwd=tmp_path)
    assert live.returncode == 0, live.stderr
    with Journal(tmp_path / "runs" / "journal.sqlite") as journal:
        assert [r.run_id for r in journal.runs()] == [run.run_id]
    answers = tmp_path / "runs" / run.run_id / "answers.jsonl"
    assert answers.exists() and (tmp_path / "runs" / run.run_id / "certificate.json").exists()


def test_memory_is_flat_in_the_number_of_items(tmp_path):
    """Peak memory of a streamed replay grows by well under 1 kB per item (the engine holds ~5 kB per item)."""
    script = (  # VmHWM: this process image's peak (ru_maxrss would carry pytest's over, across fork and exec)
        "import sys; from smartmix import run; "
        "run(sys.argv[1], reference='big', target=0.9, method='cascade', out=sys.argv[2]); "
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
    )
    peaks = {}
    for n in (5_000, 60_000):
        path = tmp_path / f"{n}.jsonl"
        rng = np.random.default_rng(n)
        letters = np.array(list("ABCD"))
        ref = letters[rng.integers(0, 4, n)]
        with open(path, "w") as f:
            for i in range(n):
                small = ref[i] if rng.random() < 0.8 else letters[rng.integers(0, 4)]
                f.write(json.dumps({
                    "id": f"q{i}", "prompt": "Question " + "x" * 300, "outputs": {
                        "small": {"answer": str(small), "cost_usd": 1e-5, "confidence": float(-rng.exponential(0.5))},
                        "big": {"answer": str(ref[i]), "cost_usd": 1e-3, "confidence": -0.01},
                    }}) + "\n")
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        done = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / f"{n}.out.jsonl")],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        peaks[n] = int(done.stdout.split()[-1]) * 1024
        assert sum(1 for _ in open(tmp_path / f"{n}.out.jsonl")) == n
    per_item = (peaks[60_000] - peaks[5_000]) / 55_000
    assert 0 < per_item < 1_000, f"{per_item:.0f} bytes per item"  # measured: ~430 with these two models


def test_stream_true_says_why_a_run_cannot_be_streamed(tmp_path):
    from smartmix import run
    from smartmix.errors import ConfigError

    path = bad_file(tmp_path, n=30, bad_line=99)
    with pytest.raises(ConfigError, match="cannot be streamed: --max-cost stops between calls"):
        run(path, reference="b", max_cost=1.0, stream=True)
    capped = run(path, reference="b", max_cost=1.0, method="reference")  # automatic: the engine runs it
    streamed = run(path, reference="b", method="reference")
    assert type(capped).__name__ == "RunResult" and type(streamed).__name__ == "StreamedResult"
    assert [(r.id, r.model, r.cost) for r in capped.items] == [(r.id, r.model, r.cost) for r in streamed.items]
