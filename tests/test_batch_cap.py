"""``--max-cost`` in batch mode, against a real batch provider on 127.0.0.1 that counts what it bills.

The cap covers every attempt of a run, profiling (synchronous calls) and application (batch jobs) alike;
a batch round only holds calls whose reserved cost fits under it. What the provider billed — its paid
synchronous requests at the list price, the tokens of the batch requests it answered at the batch price — is
counted at the server, never taken from the run's own ledger.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai_batch_server import BatchServer, run_batch_server
from test_batch_mode import answer, make_job

import smartmix
from smartmix.batch import BatchSettings
from smartmix.batch.runner import BatchStillPending
from smartmix.engine import EngineOptions
from smartmix.errors import BudgetExceeded
from smartmix.journal import Journal

FAST = BatchSettings(poll_interval_s=0.02, poll_max_interval_s=0.05)
POOL = make_job("http://127.0.0.1:1/v1").pool  # its prices: what the provider bills
SPECS = {name: POOL.spec(name) for name in POOL.names}


def run(server: BatchServer, run_dir: Path, max_cost: float | None, settings: BatchSettings = FAST):
    """One attempt of run ``r1`` in ``run_dir`` (its journal is kept between attempts)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(run_dir / "journal.sqlite")
    journal.start_run("r1", {"mode": "batch"}, 0)
    try:
        return smartmix.run(job=make_job(server.base_url), target=0.9, confidence=0.95, method="mix", seed=3,
                            journal=journal, run_id="r1", mode="batch", options=EngineOptions(max_cost=max_cost),
                            batch_settings=settings, handle_signals=False)
    finally:
        journal.close()


def billed(server: BatchServer) -> float:
    """What the provider charged so far: paid synchronous requests, and answered batch requests at half price."""
    sync = sum(len(e["prompt"].split()) * SPECS[e["model"]].input_price
               + max(1, len(e["answer"].split())) * SPECS[e["model"]].output_price for e in server.control.paid)
    tokens = server.accounting()["tokens"]
    batch = sum((t_in * SPECS[m].input_price + t_out * SPECS[m].output_price) * SPECS[m].batch_price_factor
                for m, (t_in, t_out) in tokens.items())
    return sync + batch


def journaled(run_dir: Path) -> list[dict]:
    with Journal(run_dir / "journal.sqlite") as journal:
        return journal.calls("r1")


def paid_twice(server: BatchServer) -> int:
    counts = collections.Counter((e["model"], e["prompt"]) for e in server.control.paid)
    return sum(n - 1 for n in counts.values() if n > 1)


@dataclass
class Reference:
    profiling: float
    application: float
    answers: list[tuple[str, str | None, str | None]]

    @property
    def total(self) -> float:
        return self.profiling + self.application


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """The same job without a cap, on a provider of its own: what each phase costs."""
    with run_batch_server(process_s=0.05) as server:
        server.control.set_answers(answer)
        result = run(server, tmp_path_factory.mktemp("reference"), None)
        assert billed(server) == pytest.approx(result.total_cost, rel=1e-9)
    phase = lambda name: sum(c for (_, p), c in result.ledger.entries.items() if p == name)  # noqa: E731
    assert phase("application") > 0
    return Reference(phase("profiling"), phase("application"), [(r.id, r.answer, r.model) for r in result.items])


@pytest.fixture
def server() -> Iterator[BatchServer]:
    with run_batch_server(process_s=0.05) as running:
        running.control.set_answers(answer)
        yield running


def test_a_cap_below_the_application_phase_stops_the_run_within_it_and_a_rerun_pays_nothing_twice(
        server, reference, tmp_path):
    cap = reference.profiling + 0.4 * reference.application
    with pytest.raises(BudgetExceeded) as info:
        run(server, tmp_path, cap)
    # the error and exit code of a synchronous run that reaches its cap
    assert info.value.exit_code == 4 and "--max-cost" in str(info.value) and "\n" not in str(info.value)
    first = server.accounting()
    assert first["batches_created"] >= 2  # the application phase began, in rounds that fit under the cap
    assert reference.profiling < billed(server) <= cap
    # nothing paid is lost: every batch answer the provider billed is in the journal, at what it billed
    calls = journaled(tmp_path)
    assert sum(c["phase"] == "application" for c in calls) == first["answered"] == first["distinct_requests"]
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(billed(server), rel=1e-9)

    result = run(server, tmp_path, 2 * reference.total)  # the same command, a higher cap: completes
    after = server.accounting()
    assert [(r.id, r.answer, r.model) for r in result.items] == reference.answers
    assert after["resubmissions"] == 0 and after["answered"] == after["distinct_requests"]
    assert paid_twice(server) == 0
    assert result.total_cost == pytest.approx(billed(server), rel=1e-9)
    assert billed(server) == pytest.approx(reference.total, rel=1e-9)  # all attempts together: one run's bill


def test_a_cap_the_run_fits_under_completes_in_rounds_at_the_same_bill(server, reference, tmp_path):
    # fits, but not all at once: each call reserves about 4x what its batch answer costs
    cap = reference.profiling + 2 * reference.application
    result = run(server, tmp_path, cap)
    accounting = server.accounting()
    assert [(r.id, r.answer, r.model) for r in result.items] == reference.answers
    assert result.total_cost == pytest.approx(reference.total, rel=1e-9)
    assert billed(server) == pytest.approx(reference.total, rel=1e-9) and billed(server) <= cap
    assert accounting["batches_created"] >= 2 and accounting["resubmissions"] == 0


def test_a_capped_run_whose_batch_is_still_pending_stops_and_resumes_within_the_cap(server, reference, tmp_path):
    """Calls waiting for budget must not wait forever when the round ahead of them stops the run."""
    cap = reference.profiling + 0.4 * reference.application
    server.configure(process_s=1.5)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            run(server, tmp_path, cap, BatchSettings(poll_interval_s=0.02, poll_max_interval_s=0.05, wait_s=0.2))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the run hung instead of stopping with its batch pending"
    assert isinstance(outcome[0], BatchStillPending), outcome
    assert server.accounting()["batches_created"] == 1
    server.configure(process_s=0.05)
    with pytest.raises(BudgetExceeded):  # the same cap: the pending round is collected, then the cap stops it
        run(server, tmp_path, cap)
    accounting = server.accounting()
    assert accounting["resubmissions"] == 0 and accounting["batches_created"] >= 2
    assert billed(server) <= cap
    calls = journaled(tmp_path)
    assert sum(c["phase"] == "application" for c in calls) == accounting["answered"]
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(billed(server), rel=1e-9)
