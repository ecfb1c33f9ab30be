"""Scores without logprobs, end to end against a real OpenAI-compatible server on 127.0.0.1.

The server (tests/openai_server.py, in a thread) gives no logprobs for any model. Items are small sums;
the reference ``big`` answers "The answer is N."; ``small`` and ``other`` answer in chain-of-thought style
("... #### N"), each wrong on its own hash-chosen share of items (a wrong answer is off by a
model-specific amount, so two wrong answers do not agree). Sampled at temperature > 0 (self-consistency),
``small`` keeps its answer where it is right and varies with the seed where it is wrong; asked "is your
answer correct?" (verbal), it says yes exactly when it is right, except on a few items.

Checked: the virtual model never reaches the server (its real calls do); what the run bills is exactly
what the server was paid for; every real call is in the journal and a rerun pays nothing; the delivered
answers meet the target; the certificate says which score each model used; the recorded-data form
(:func:`consistency_candidates`) and the live form score alike; on a replayed set large enough for a
cascade to pay, the cascade on consistency scores beats the mix.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_server import Control, run_server  # noqa: E402

from smartmix.api import Job, run, with_scores  # noqa: E402
from smartmix.backends.composite import VERBAL_QUESTION, verbal_score  # noqa: E402
from smartmix.backends.openai_compat import EndpointConfig, OpenAIBackend  # noqa: E402
from smartmix.comparators import make_comparator  # noqa: E402
from smartmix.domain import Completion  # noqa: E402
from smartmix.models import ModelSpec, Pool  # noqa: E402
from smartmix.scores import consistency_candidates  # noqa: E402
from smartmix.tasks import Item, Template  # noqa: E402

N_ITEMS = 150
PRICES = {"small": (0.1, 0.4), "other": (0.2, 0.8), "big": (20.0, 80.0)}  # USD per million tokens
WRONG = {"small": 0.25, "other": 0.15}


def _u(*parts: object) -> float:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "big") / 2**32


def _sum_of(prompt: str) -> tuple[str, int]:
    m = re.search(r"(Q\d+): what is (\d+) \+ (\d+)\?", prompt)
    assert m is not None, prompt
    return m.group(1), int(m.group(2)) + int(m.group(3))


def provider(model: str, prompt: str, params: dict) -> str:
    qid, truth = _sum_of(prompt)
    if model == "big":
        return f"The answer is {truth}."
    wrong = _u(model, qid) < WRONG[model]
    if prompt.rstrip().endswith(VERBAL_QUESTION):  # the follow-up: says yes when right (5% noise)
        said_wrong = wrong != (_u("noise", qid) < 0.05)
        return "No." if said_wrong else "Yes."
    value = truth
    if wrong:
        value = truth + (1 if model == "small" else 2)
        if params.get("temperature", 0) > 0:
            value += int(params.get("seed", 0))
    return f"Adding the two numbers step by step gives {value}.\n#### {value}"


@pytest.fixture(scope="module")
def server():
    control = Control()
    with run_server(control) as srv:
        yield srv


@pytest.fixture
def clean(server):
    server.control.reset()
    server.control.set_answers(provider)
    for m in PRICES:
        server.control.set_logprobs_mode(m, "omit")
    return server


def _job(server, n: int = N_ITEMS) -> Job:
    items = [Item(f"q{i}", {"question": f"Q{i}: what is {i % 37} + {(7 * i) % 53}?"}) for i in range(n)]
    pool = Pool([ModelSpec(m, a / 1e6, b / 1e6) for m, (a, b) in PRICES.items()], "big")
    backend = OpenAIBackend({m: EndpointConfig(m, base_url=server.base_url) for m in PRICES})
    return Job(items, pool, Template(user="{question}"), make_comparator("numeric"), backend, "test")


def _billed(entries: list[dict]) -> float:
    total = 0.0
    for e in entries:
        p_in, p_out = PRICES[e["model"]]
        total += (len(e["prompt"].split()) * p_in + max(1, len(e["answer"].split())) * p_out) * 1e-6
    return total


# A plan is certified with probability >= 1 - delta, and a valid policy certifies right up to the allowance,
# so one run may land just under T; the guarantee itself is checked over 1,000 seeds in benchmarks/. One run
# far below T would mean a broken plan: that is what these tests guard against.
GROSS_MISS = 0.05


def _realised(result, job) -> float:
    comparator = job.comparator
    truth = {it.id: str(_sum_of(it.fields["question"])[1]) for it in job.items}
    return float(np.mean([comparator.agree(r.answer, truth[r.id]) for r in result.items]))


def _wrong(model: str, item_id: str) -> bool:
    return _u(model, "Q" + item_id[1:]) < WRONG[model]


def _journaled_scores(journal, run_id: str, virtual: str) -> dict[str, float]:
    """The score of every call of a virtual model the engine journaled, by item."""
    rows = [c for c in journal.calls(run_id) if c["model"] == virtual]
    assert rows, f"no call of {virtual} in the journal"
    return {c["item_id"]: c["extra"]["score"] for c in rows}


def test_consistency_score_live_run(clean, tmp_path):
    from smartmix.journal import Journal

    job = _job(clean)
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.start_run("r1", {"test": True}, 0)
        result = run(job=job, method="cascade", target=0.9, scores="consistency", journal=journal, run_id="r1")
        paid = clean.control.paid
        assert {e["model"] for e in paid} == {"small", "other", "big"}  # never the virtual "small|other"
        assert result.total_cost == pytest.approx(_billed(paid), rel=1e-9)  # the bill is what the server was paid

        # the score is the agreement of the two cheap models: 1 exactly where both are right
        scores = _journaled_scores(journal, "r1", "small|other")
        assert len(scores) >= 100
        for item_id, score in scores.items():
            assert score == (0.0 if _wrong("small", item_id) or _wrong("other", item_id) else 1.0), item_id

        details = result.certificate.details
        assert details["scores"]["small|other"].startswith("consistency")
        assert details["scores"]["small"].startswith("own confidence")
        assert _realised(result, job) >= 0.9 - GROSS_MISS

        # every real call is in the journal: the same run again pays nothing and answers the same
        parts = journal.calls("r1/parts")
        assert parts and {c["model"] for c in parts} <= {"small", "other"}
        clean.control.reset()
        clean.control.set_answers(provider)
        again = run(job=_job(clean), method="cascade", target=0.9, scores="consistency", journal=journal, run_id="r1")
        assert clean.control.paid == []
        assert [r.answer for r in again.items] == [r.answer for r in result.items]


def test_self_consistency_samples_the_model(clean, tmp_path):
    from smartmix.journal import Journal

    job = _job(clean)
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.start_run("r2", {"test": True}, 0)
        job = with_scores(job, "self-consistency", samples=2)
        result = run(job=job, method="cascade", target=0.9, journal=journal, run_id="r2")
        paid = clean.control.paid
        samples = [e for e in paid if e["model"] == "small" and e["params"].get("temperature") == 0.7]
        assert samples and {e["params"]["seed"] for e in samples} == {1, 2}
        assert result.total_cost == pytest.approx(_billed(paid), rel=1e-9)
        # a right answer is sampled again every time; a wrong one never (its samples vary with the seed)
        for item_id, score in _journaled_scores(journal, "r2", "small@2").items():
            assert score == (0.0 if _wrong("small", item_id) else 1.0), item_id
        assert result.certificate.details["scores"]["small@2"].startswith("self-consistency")
        assert _realised(result, job) >= 0.9 - GROSS_MISS


def test_verbal_confidence_asks_the_follow_up(clean, tmp_path):
    from smartmix.journal import Journal

    job = _job(clean)
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.start_run("r3", {"test": True}, 0)
        result = run(job=job, method="cascade", target=0.9, scores="verbal", journal=journal, run_id="r3")
        paid = clean.control.paid
        follow = [e for e in paid if e["prompt"].rstrip().endswith(VERBAL_QUESTION)]
        assert follow and {e["model"] for e in follow} <= {"small", "other"}
        assert all("####" in e["prompt"] for e in follow)  # the model's own answer is in the conversation
        assert all(e["params"].get("max_tokens") == 3 for e in follow)
        assert result.total_cost == pytest.approx(_billed(paid), rel=1e-9)
        scores = _journaled_scores(journal, "r3", "small?")
        hits = [score == (0.0 if _wrong("small", i) else 1.0) for i, score in scores.items()]
        assert 0.85 <= np.mean(hits) < 1.0  # says yes when right, except on the 5% of items with noise
        assert result.certificate.details["scores"]["small?"].startswith("verbal")
        assert _realised(result, job) >= 0.9 - GROSS_MISS


def test_without_any_score_the_cascade_says_so(clean):
    job = _job(clean, 300)  # past the pilot, where the cascade looks at the scores
    result = run(job=job, method="cascade", target=0.9)
    assert "no candidate returned confidence scores: planned as the model mix" in result.certificate.details[
        "fallback_reason"]
    assert _realised(result, job) >= 0.9


def test_verbal_score_reading():
    assert verbal_score(Completion("m", "Yes, it is.")) == 1.0
    assert verbal_score(Completion("m", "no")) == 0.0
    assert verbal_score(Completion("m", "I am not sure")) == 0.5
    lp = Completion("m", "Yes", top_logprobs=(("Yes", np.log(0.6)), (" no", np.log(0.2)), ("maybe", np.log(0.2))))
    assert verbal_score(lp) == pytest.approx(0.75)


def test_consistency_candidates_on_known_outputs():
    answers = np.array(
        [["#### 4", "4", "The answer is 4."], ["#### 5", "6", "The answer is 5."], [None, "7", "The answer is 7."]],
        dtype=object,
    )
    comparator = make_comparator("numeric")
    agree = np.array([[comparator.agree(a, row[-1]) for a in row] for row in answers])
    cost = np.array([[1.0, 2.0, 10.0]] * 3)
    score = np.full((3, 3), np.nan)
    a, c, s, models = consistency_candidates(answers, agree, cost, score, ("m1", "m2", "ref"), comparator)
    assert models == ("m1", "m2", "m1|m2", "m2|m1", "ref")  # cheapest first, the reference last
    j = models.index("m1|m2")
    assert list(a[:, j]) == [True, True, False]  # m1's own agreement
    assert list(c[:, j]) == [3.0, 3.0, 3.0]
    assert list(s[:, j]) == [1.0, 0.0, 0.0]  # m2 agrees with m1 on item 0 only; m1 unparseable on item 2
    assert list(a[:, models.index("m2|m1")]) == [True, False, True]
    with pytest.raises(ValueError):
        consistency_candidates(answers[:, :2], agree, cost, score, ("m1", "m2", "ref"), comparator)


def _replay_file(path: Path, n: int) -> Path:
    """Recorded outputs of the same three models (no confidence anywhere), for a replayed run."""
    import json

    rows = []
    for i in range(n):
        prompt = f"Q{i}: what is {i % 37} + {(7 * i) % 53}?"
        outputs = {}
        for m in PRICES:
            text = provider(m, prompt, {})
            outputs[m] = {"answer": text, "cost_usd": (len(prompt.split()) * PRICES[m][0] + len(text.split()) * PRICES[m][1]) * 1e-6}
        rows.append({"id": f"q{i}", "prompt": prompt, "outputs": outputs})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_replayed_cascade_on_consistency_scores_beats_the_mix(tmp_path):
    data = _replay_file(tmp_path / "sums.jsonl", 8_000)
    # at T = 0.95 no cheap model alone comes close (0.75 and 0.85 agreement); both agreeing is a sure sign
    mix = run(data, method="mix", target=0.95, compare="numeric", seed=3)
    cascade = run(data, method="cascade", target=0.95, compare="numeric", scores="consistency", seed=3)
    assert cascade.certificate.details.get("fallback") is None
    chain = cascade.certificate.details["chain"]
    assert "|" in chain[0] and chain[-1] == "big"
    assert cascade.total_cost < 0.8 * mix.total_cost
    refs = {f"q{i}": str(_sum_of(f"Q{i}: what is {i % 37} + {(7 * i) % 53}?")[1]) for i in range(8_000)}
    comparator = make_comparator("numeric")
    assert np.mean([comparator.agree(r.answer, refs[r.id]) for r in cascade.items]) >= 0.95
    with pytest.raises(Exception, match="needs live models"):
        run(data, method="cascade", compare="numeric", scores="verbal")
