from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from smartmix.backends.base import Backend
from smartmix.backends.replay import RecordedArrays, RecordedOutput, RecordedOutputs, ReplayBackend
from smartmix.domain import Message, Request
from smartmix.errors import ConfigError, DataError, PriceError, UnknownModelError
from smartmix.models import Pool
from smartmix.tasks import ExactComparator, LabelComparator, Template

DATA = Path(__file__).parents[2] / "shared" / "data"
MMLU_QWEN = DATA / "mmlu-qwen-oai" / "test.jsonl"
TRIVIA_LLAMA = DATA / "triviaqa-llama" / "test.jsonl"
needs_data = pytest.mark.skipif(
    not MMLU_QWEN.exists(), reason=f"recorded outputs not found at {DATA} (shared data is not checked out)"
)


def run(coro):
    return asyncio.run(coro)


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bare_rows() -> list[dict]:
    """Only what the layout requires: ids, prompts, answers; everything else null or absent."""
    return [
        {
            "id": "q1",
            "prompt": "Capital of France?",
            "gold": None,
            "outputs": {
                "small": {
                    "answer": "Paris",
                    "cost_usd": None,
                    "input_tokens": None,
                    "output_tokens": None,
                    "confidence": None,
                    "correct": None,
                    "latency_ms": None,
                },
                "big": {"answer": "paris."},
            },
        },
        {
            "id": "q2",
            "system": None,
            "prompt": "Largest planet?",
            "outputs": {"small": {"answer": "Saturn"}, "big": {"answer": "Jupiter"}},
        },
    ]


@pytest.fixture(scope="module")
def mmlu() -> RecordedOutputs:
    if not MMLU_QWEN.exists():
        pytest.skip(f"recorded outputs not found at {DATA} (shared data is not checked out)")
    return RecordedOutputs.load(MMLU_QWEN)


# -- loading the real files --------------------------------------------------------------------------


@needs_data
def test_load_real_file(mmlu: RecordedOutputs) -> None:
    assert len(mmlu.items) == 1531
    assert mmlu.models == ["gpt-4o-mini", "qwen2.5-32b-coder-instruct", "qwen2.5-72b-instruct", "gpt-4o"]
    assert mmlu.default_reference() == "gpt-4o"
    first = mmlu.items[0]
    assert first.id == "mmlu-test-0"
    assert first.fields["gold"] == "A" and first.fields["meta"] == {"subject": "abstract_algebra"}
    assert first.fields["split"] == "test" and "outputs" not in first.fields
    assert first.fields["prompt"].startswith("Answer the multiple-choice question below")


@needs_data
def test_known_outputs_exactly(mmlu: RecordedOutputs) -> None:
    assert mmlu.output("mmlu-test-0", "gpt-4o-mini") == RecordedOutput(
        answer="A",
        cost_usd=1.815e-05,
        input_tokens=117,
        output_tokens=1,
        confidence=-0.7299789,
        latency_ms=323.09460639953613,
        correct=True,
    )
    out = mmlu.output("mmlu-test-1", "qwen2.5-32b-coder-instruct")
    assert (out.answer, out.cost_usd, out.correct) == ("A", 0.0001098, False)
    assert mmlu.has("mmlu-test-1", "gpt-4o") and not mmlu.has("mmlu-test-1", "gpt-5")
    assert not mmlu.has("nope", "gpt-4o")


@needs_data
def test_lookup_errors_are_clear(mmlu: RecordedOutputs) -> None:
    with pytest.raises(DataError, match="item 'nope' is not in the recorded file"):
        mmlu.output("nope", "gpt-4o")
    with pytest.raises(UnknownModelError) as err:
        mmlu.output("mmlu-test-0", "gpt-5")
    assert "recorded models: gpt-4o-mini, qwen2.5-32b-coder-instruct" in str(err.value)


@needs_data
def test_arrays_agreement_rates_match_the_data(mmlu: RecordedOutputs) -> None:
    arr = mmlu.arrays(mmlu.models, "gpt-4o", ExactComparator())
    assert arr.models == tuple(mmlu.models)
    assert arr.agree.shape == (1531, 4) and arr.agree.dtype == bool
    rates = dict(zip(arr.models, arr.agree.mean(axis=0), strict=True))
    assert rates["gpt-4o-mini"] == pytest.approx(0.788, abs=0.001)
    assert rates["qwen2.5-72b-instruct"] == pytest.approx(0.842, abs=0.001)
    assert rates["gpt-4o"] == 1.0
    assert arr.cost[:, arr.index("gpt-4o")].sum() == pytest.approx(0.726855)
    assert arr.cost[0, 0] == 1.815e-05
    assert arr.confidence[0, 0] == pytest.approx(-0.7299789)
    assert arr.correct[0, 0] == 1.0 and arr.correct[1, 0] == 0.0
    assert arr.item_ids[:2] == ("mmlu-test-0", "mmlu-test-1")
    labels = mmlu.arrays(["gpt-4o-mini", "gpt-4o"], "gpt-4o", LabelComparator(list("ABCD")))
    assert np.array_equal(labels.agree[:, 0], arr.agree[:, 0])


@needs_data
def test_arrays_subset_and_errors(mmlu: RecordedOutputs) -> None:
    arr = mmlu.arrays(["qwen2.5-72b-instruct"], "gpt-4o", ExactComparator())
    assert arr.agree.shape == (1531, 1)
    with pytest.raises(UnknownModelError, match="'gpt-5' is not in the recorded outputs"):
        mmlu.arrays(["gpt-5"], "gpt-4o", ExactComparator())
    with pytest.raises(UnknownModelError, match="'o1'"):
        mmlu.arrays(["gpt-4o-mini"], "o1", ExactComparator())
    with pytest.raises(ConfigError, match="named twice"):
        mmlu.arrays(["gpt-4o", "gpt-4o"], "gpt-4o", ExactComparator())
    with pytest.raises(UnknownModelError, match="not in these arrays"):
        arr.index("gpt-4o-mini")


@needs_data
def test_open_answers_file() -> None:
    rec = RecordedOutputs.load(TRIVIA_LLAMA)
    assert rec.default_reference() == "llama3.1-405b"
    out = rec.output("triviaqa-test-1", "llama3.2-1b")
    assert (out.answer, out.cost_usd, out.correct) == ("Ben Nevis", 2.8000000000000003e-05, False)
    assert rec.items[0].fields["gold"] is None


@needs_data
def test_recorded_pool(mmlu: RecordedOutputs) -> None:
    pool = mmlu.pool()
    assert pool.reference.name == "gpt-4o"
    assert pool.names[0] == "gpt-4o-mini"
    assert pool.spec("gpt-4o").price_source == "recorded"
    assert pool.spec("gpt-4o").call_price == pytest.approx(0.726855 / 1531)
    given = mmlu.pool(prices={"gpt-4o": (1e-6, 1e-6)})
    assert given.spec("gpt-4o").price_source == "given"


# -- the replay backend ------------------------------------------------------------------------------


@needs_data
def test_replay_by_item_id(mmlu: RecordedOutputs) -> None:
    backend = ReplayBackend(mmlu)
    assert isinstance(backend, Backend)
    done = run(backend.complete(Request("gpt-4o-mini", (Message("user", "ignored"),), item_id="mmlu-test-0")))
    assert done.model == "gpt-4o-mini"
    assert (done.text, done.cost_usd, done.input_tokens, done.output_tokens) == ("A", 1.815e-05, 117, 1)
    assert done.confidence == pytest.approx(-0.7299789) and done.latency_ms == pytest.approx(
        323.0946, abs=1e-3
    )
    assert done.extra["correct"] is True and done.extra["tokens_estimated"] is False
    run(backend.aclose())


@needs_data
def test_replay_by_prompt_text(mmlu: RecordedOutputs) -> None:
    backend = ReplayBackend(mmlu)
    item = mmlu.items[1]
    messages = Template.recorded().render(item)
    done = run(backend.complete(Request("qwen2.5-32b-coder-instruct", messages)))
    assert done.extra["item_id"] == "mmlu-test-1"
    assert (done.text, done.cost_usd) == ("A", 0.0001098)
    user_only = (Message("user", item.fields["prompt"]),)
    assert run(backend.complete(Request("gpt-4o", user_only))).extra["item_id"] == "mmlu-test-1"


@needs_data
def test_replay_errors(mmlu: RecordedOutputs) -> None:
    backend = ReplayBackend(mmlu)
    with pytest.raises(DataError, match="item 'nope' is not in the recorded file"):
        run(backend.complete(Request("gpt-4o", (Message("user", "what?"),), item_id="nope")))
    with pytest.raises(DataError, match="no item in the recorded file .* has the prompt 'what\\?'"):
        run(backend.complete(Request("gpt-4o", (Message("user", "what?"),))))
    with pytest.raises(UnknownModelError, match="recorded models: gpt-4o-mini"):
        run(backend.complete(Request("gpt-5", (), item_id="mmlu-test-0")))


# -- files with only the required fields -------------------------------------------------------------


def test_bare_file_works_with_prices(tmp_path: Path) -> None:
    rec = RecordedOutputs.load(write_jsonl(tmp_path / "bare.jsonl", bare_rows()))
    assert rec.models == ["small", "big"]
    assert rec.default_reference() == "big"  # no costs: the last model listed
    assert rec.items[1].fields["system"] is None and rec.items[0].fields["meta"] is None
    pool = Pool.build(["small", "big"], "big", prices={"small": (1e-6, 2e-6), "big": (1e-5, 2e-5)})
    arr = rec.arrays(["small", "big"], "big", ExactComparator(), pool=pool)
    assert arr.agree.tolist() == [[True, True], [False, True]]
    # q1: prompt "Capital of France?" is 18 chars -> 5 tokens; "Paris" -> 2 tokens, "paris." -> 2 tokens.
    assert arr.cost[0, 0] == pytest.approx(5 * 1e-6 + 2 * 2e-6)
    assert arr.cost[0, 1] == pytest.approx(5 * 1e-5 + 2 * 2e-5)
    assert np.isnan(arr.confidence).all() and np.isnan(arr.correct).all()

    backend = ReplayBackend(rec, pool)
    done = run(backend.complete(Request("small", (Message("user", "Capital of France?"),))))
    assert done.text == "Paris" and (done.input_tokens, done.output_tokens) == (5, 2)
    assert done.cost_usd == pytest.approx(arr.cost[0, 0])
    assert done.extra["tokens_estimated"] is True and done.extra["cost_recorded"] is False
    unpriced = run(ReplayBackend(rec).complete(Request("small", (), item_id="q1")))
    assert unpriced.cost_usd is None and unpriced.confidence is None


def test_bare_file_without_prices_raises_price_error(tmp_path: Path) -> None:
    rec = RecordedOutputs.load(write_jsonl(tmp_path / "bare.jsonl", bare_rows()))
    with pytest.raises(
        PriceError, match=r"no recorded cost_usd for model small on item 'q1'.*--price small="
    ):
        rec.arrays(["small", "big"], "big", ExactComparator())
    unpriced = Pool.build(["small", "big"], "big", require_prices=False)
    with pytest.raises(PriceError, match="no price for model small"):
        rec.arrays(["small", "big"], "big", ExactComparator(), pool=unpriced)


def test_null_answer_never_agrees_and_replays_as_empty_text(tmp_path: Path) -> None:
    rows = [
        {
            "id": 1,
            "prompt": "p",
            "outputs": {"a": {"answer": None, "cost_usd": 0.1}, "b": {"answer": "x", "cost_usd": 1}},
        }
    ]
    rec = RecordedOutputs.load(write_jsonl(tmp_path / "n.jsonl", rows))
    assert rec.items[0].id == "1"
    assert rec.arrays(["a", "b"], "b", ExactComparator()).agree.tolist() == [[False, True]]
    assert rec.default_reference() == "b"
    assert run(ReplayBackend(rec).complete(Request("a", (), item_id="1"))).text == ""


def test_sparse_outputs(tmp_path: Path) -> None:
    rows = bare_rows()
    del rows[1]["outputs"]["small"]
    rec = RecordedOutputs.load(write_jsonl(tmp_path / "s.jsonl", rows))
    assert not rec.has("q2", "small")
    with pytest.raises(DataError, match="item 'q2' has no recorded output of model 'small'"):
        rec.output("q2", "small")
    with pytest.raises(DataError, match="model 'small' has no recorded output for item 'q2'"):
        rec.arrays(
            ["small", "big"],
            "big",
            ExactComparator(),
            pool=Pool.build(["small", "big"], "big", {"small": (0, 0), "big": (0, 0)}),
        )


def test_compressed_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in bare_rows()))
    assert len(RecordedOutputs.load(path).items) == 2


@pytest.mark.parametrize(
    "row,match",
    [
        ({"prompt": "p", "outputs": {"a": {"answer": "x"}}}, r"line 2: no 'id'"),
        ({"id": "z", "outputs": {"a": {"answer": "x"}}}, r"line 2: 'prompt' must be the user message"),
        ({"id": "z", "prompt": "p"}, r"line 2: 'outputs' must be a non-empty object"),
        ({"id": "z", "prompt": "p", "outputs": {}}, r"line 2: 'outputs' must be a non-empty object"),
        ({"id": "z", "prompt": "p", "outputs": {"a": "x"}}, r"line 2, outputs\['a'\]: expected an object"),
        (
            {"id": "z", "prompt": "p", "outputs": {"a": {"cost_usd": 1}}},
            r"line 2, outputs\['a'\]: no 'answer'",
        ),
        ({"id": "z", "prompt": "p", "outputs": {"a": {"answer": ["x"]}}}, r"'answer' must be text or null"),
        (
            {"id": "z", "prompt": "p", "outputs": {"a": {"answer": "x", "cost_usd": "cheap"}}},
            r"'cost_usd' must be a number",
        ),
        (
            {"id": "z", "prompt": "p", "outputs": {"a": {"answer": "x", "input_tokens": 1.5}}},
            r"'input_tokens' must be a whole number",
        ),
        (
            {"id": "z", "prompt": "p", "outputs": {"a": {"answer": "x", "correct": "yes"}}},
            r"'correct' must be true, false or null",
        ),
        ({"id": "q1", "prompt": "p", "outputs": {"a": {"answer": "x"}}}, r"line 2: duplicate item id 'q1'"),
        ('{"id": "z", "prompt": ', r"line 2: not valid JSON"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path: Path, row, match: str) -> None:
    first = {"id": "q1", "prompt": "p", "outputs": {"a": {"answer": "x"}}}
    path = write_jsonl(tmp_path / "bad.jsonl", [first, row])
    with pytest.raises(DataError, match=match):
        RecordedOutputs.load(path)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="recorded outputs file not found"):
        RecordedOutputs.load(tmp_path / "missing.jsonl")
    (tmp_path / "split.jsonl").write_text("")
    with pytest.raises(DataError, match=r"is a folder; .*\(it holds: split.jsonl\)"):
        RecordedOutputs.load(tmp_path)
    with pytest.raises(DataError, match="holds no recorded items"):
        RecordedOutputs.load(tmp_path / "split.jsonl")
    (tmp_path / "r.csv").write_text("id\n1\n")
    with pytest.raises(DataError, match=r"must be a \.jsonl file"):
        RecordedOutputs.load(tmp_path / "r.csv")


def test_recorded_arrays_checks_shapes() -> None:
    ok = np.zeros((2, 1))
    RecordedArrays(("m",), ok.astype(bool), ok, ok, ok)
    with pytest.raises(ValueError, match="cost has shape"):
        RecordedArrays(("m",), ok.astype(bool), np.zeros((3, 1)), ok, ok)
