from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from smartmix.domain import Message
from smartmix.errors import ConfigError, DataError, TemplateError
from smartmix.tasks import (
    Comparator,
    ExactComparator,
    Item,
    LabelComparator,
    Template,
    load_items,
    normalize_answer,
)

ROWS = [
    {"id": "a", "text": "great film", "label": "positive"},
    {"id": "b", "text": "dull", "label": "negative"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- load_items --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["items.jsonl", "items.ndjson"])
def test_load_jsonl(tmp_path: Path, name: str) -> None:
    items = load_items(write_jsonl(tmp_path / name, ROWS))
    assert [i.id for i in items] == ["a", "b"]
    assert items[0].fields == ROWS[0]


def test_load_jsonl_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n   \n" + json.dumps(ROWS[1]) + "\n")
    assert [i.id for i in load_items(path)] == ["a", "b"]


@pytest.mark.parametrize("opener,suffix", [(gzip.open, ".gz"), (bz2.open, ".bz2")])
def test_load_compressed_jsonl_and_csv(tmp_path: Path, opener, suffix: str) -> None:
    jpath = tmp_path / f"items.jsonl{suffix}"
    with opener(jpath, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in ROWS))
    assert [i.id for i in load_items(jpath)] == ["a", "b"]
    cpath = tmp_path / f"items.csv{suffix}"
    with opener(cpath, "wt", encoding="utf-8") as fh:
        fh.write("id,text\na,hello\nb,bye\n")
    assert [i.fields["text"] for i in load_items(cpath)] == ["hello", "bye"]


def test_load_csv_keeps_text_and_empty_cells_are_none(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text('id,text,answer\n007,"hello, world",NA\n008,,null\n', encoding="utf-8")
    items = load_items(path)
    assert [i.id for i in items] == ["007", "008"]
    assert items[0].fields == {"id": "007", "text": "hello, world", "answer": "NA"}
    assert items[1].fields["text"] is None
    assert items[1].fields["answer"] == "null"


def test_load_tsv(tmp_path: Path) -> None:
    path = tmp_path / "items.tsv"
    path.write_text("id\ttext\nx\ta, b\n", encoding="utf-8")
    assert load_items(path)[0].fields["text"] == "a, b"


def test_load_parquet_gives_plain_python_values(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pd.DataFrame({"id": [1, 2], "text": ["x", None], "score": [0.5, float("nan")]}).to_parquet(path)
    items = load_items(path)
    assert [i.id for i in items] == ["1", "2"]
    assert type(items[0].fields["id"]) is int
    assert items[1].fields["text"] is None and items[1].fields["score"] is None


def test_parquet_lists_and_nullable_columns(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    df = pd.DataFrame({"choices": [["a", "b"], None], "n": pd.array([1, None], dtype="Int64")})
    df.to_parquet(path)
    assert [i.fields for i in load_items(path)] == [
        {"choices": ["a", "b"], "n": 1},
        {"choices": None, "n": None},
    ]


def test_duplicate_column_names() -> None:
    df = pd.DataFrame([[1, 2]], columns=["x", "x"])
    with pytest.raises(DataError, match="duplicate column names"):
        load_items(df)


def test_load_dataframe_and_custom_id_field() -> None:
    df = pd.DataFrame({"key": ["k1", "k2"], "text": ["x", "y"]})
    items = load_items(df, id_field="key")
    assert [i.id for i in items] == ["k1", "k2"]
    assert items[1].fields == {"key": "k2", "text": "y"}


def test_missing_id_column_numbers_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", [{"text": "x"}, {"text": "y"}])
    assert [i.id for i in load_items(path)] == ["row-0", "row-1"]
    assert [i.id for i in load_items(pd.DataFrame({"text": ["x"]}))] == ["row-0"]


def test_item_is_hashable_by_id() -> None:
    item = Item("a", {"text": "x"})
    assert {item: 1}[Item("a", {"text": "x"})] == 1


def test_duplicate_ids_name_the_first_duplicate(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", [{"id": "a"}, {"id": "b"}, {"id": "b"}, {"id": "a"}])
    with pytest.raises(DataError, match="duplicate item id 'b'"):
        load_items(path)


def test_row_without_id_when_others_have_one(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", [{"id": "a"}, {"text": "no id"}])
    with pytest.raises(DataError, match="row 1 has no value in the id column 'id'"):
        load_items(path)


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b",\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_items(path)
    msg = str(err.value)
    assert str(path) in msg and "line 2" in msg and "fix or delete that line" in msg


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: expected a JSON object"):
        load_items(path)


@pytest.mark.parametrize(
    "name,content", [("e.jsonl", ""), ("e.jsonl", "\n \n"), ("e.csv", ""), ("e.csv", "id,text\n")]
)
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match="holds no items"):
        load_items(path)


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "items.xlsx"
    path.write_text("x")
    with pytest.raises(DataError) as err:
        load_items(path)
    assert "unknown file type" in str(err.value)
    for ext in (".jsonl", ".csv", ".parquet", ".jsonl.gz"):
        assert ext in str(err.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="items file not found"):
        load_items(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="is a folder"):
        load_items(tmp_path)


def test_bad_parquet_and_not_a_dataframe(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_text("not parquet")
    with pytest.raises(DataError, match="cannot read .* as Parquet"):
        load_items(path)
    with pytest.raises(DataError, match="give a file path or a pandas DataFrame"):
        load_items([{"id": 1}])  # type: ignore[arg-type]


# -- Template ----------------------------------------------------------------------------------------


def test_template_render_and_fields() -> None:
    t = Template(user="Review: {text}\nSentiment:", system="You label {task} reviews.")
    assert t.fields == frozenset({"text", "task"})
    item = Item("a", {"text": "great", "task": "movie"})
    assert t.render(item) == (
        Message("system", "You label movie reviews."),
        Message("user", "Review: great\nSentiment:"),
    )


def test_template_literal_braces_index_and_format_spec() -> None:
    t = Template(user='Reply as JSON {{"label": ...}} for {meta[subject]} ({score:.1f})')
    assert t.fields == frozenset({"meta", "score"})
    (msg,) = t.render(Item("a", {"meta": {"subject": "law"}, "score": 0.25}))
    assert msg.content == 'Reply as JSON {"label": ...} for law (0.2)'


def test_template_missing_field_names_field_item_and_available_fields() -> None:
    t = Template(user="{text} {context}")
    with pytest.raises(TemplateError) as err:
        t.render(Item("item-9", {"id": "item-9", "text": "x"}))
    msg = str(err.value)
    assert "'context'" in msg and "'item-9'" in msg and "id, text" in msg
    assert isinstance(err.value, DataError)


def test_template_check_stops_at_first_bad_item() -> None:
    t = Template(user="{text}")
    t.check([Item("a", {"text": "x"})])
    with pytest.raises(TemplateError, match="item 'b'"):
        t.check([Item("a", {"text": "x"}), Item("b", {}), Item("c", {})])


def test_template_null_value_renders_empty_and_bad_spec_is_template_error() -> None:
    assert Template(user="[{text}]").render(Item("a", {"text": None}))[0].content == "[]"
    with pytest.raises(TemplateError, match="cannot fill the prompt template"):
        Template(user="{n:.2f}").render(Item("a", {"n": "text"}))


@pytest.mark.parametrize("bad", ["{text", "text}", "{} and {0}"])
def test_malformed_template_is_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="literal brace"):
        Template(user=bad)


def test_recorded_template() -> None:
    t = Template.recorded()
    with_system = Item("a", {"system": "Be brief.", "prompt": "Q?"})
    assert t.render(with_system) == (Message("system", "Be brief."), Message("user", "Q?"))
    assert t.render(Item("b", {"system": None, "prompt": "Q?"})) == (Message("user", "Q?"),)
    assert t.render(Item("c", {"prompt": "Q?"})) == (Message("user", "Q?"),)
    t.check([Item("c", {"prompt": "Q?"})])
    with pytest.raises(TemplateError, match="'prompt'"):
        t.render(Item("d", {"system": "x"}))


# -- answers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [
        (None, ""),
        ("  B  ", "b"),
        (" (B). ", "b"),
        ('"Paris"', "paris"),
        ("**Paris**", "paris"),
        ("The   Taming\nof the Shrew.", "the taming of the shrew"),
        ("-3", "-3"),
        ("$5", "$5"),
        ("“Ｆriends”", "friends"),
        ("[C]", "c"),
        ("...", ""),
    ],
)
def test_normalize_answer(raw: str | None, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_exact_comparator() -> None:
    c = ExactComparator()
    assert isinstance(c, Comparator)
    assert c.parse(" Friends. ") == "friends"
    assert c.parse("  ") is None and c.parse(None) is None
    assert c.agree("Friends", "friends!")
    assert not c.agree("Friends", "Seinfeld")
    assert not c.agree(None, None) and not c.agree("", "") and not c.agree("x", None)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("positive", "Positive"),
        (" Positive", "Positive"),
        ("NEGATIVE.", "Negative"),
        ("Positive review", "Positive"),
        ("negative: the plot is thin", "Negative"),
        ("positive/negative", "Positive"),
        ("I think it is positive", None),
        ("positively", None),
        ("", None),
        (None, None),
    ],
)
def test_label_comparator_parse(raw: str | None, expected: str | None) -> None:
    assert LabelComparator(["Positive", "Negative"]).parse(raw) == expected


def test_label_comparator_needs_word_boundary_and_prefers_longer_labels() -> None:
    yn = LabelComparator(["yes", "no"])
    assert yn.parse("not sure") is None
    assert yn.parse(" True") is None
    tf = LabelComparator(labels=["True", "False"])
    assert tf.parse(" True") == "True"
    abcd = LabelComparator(list("ABCD"))
    assert abcd.parse("As an AI, I cannot") is None
    assert abcd.parse("B) 42") == "B"
    assert abcd.parse("(c)") == "C"
    multi = LabelComparator(["very positive", "very"])
    assert multi.parse("very positive indeed") == "very positive"


def test_label_comparator_agree() -> None:
    c = LabelComparator(["positive", "negative"])
    assert isinstance(c, Comparator)
    assert c.agree("Positive!", "positive review")
    assert not c.agree("positive", "negative")
    assert not c.agree("maybe", "maybe")


@pytest.mark.parametrize(
    "labels,match",
    [([], "at least one"), ("AB", "single string"), (["a", "A "], "same after"), (["..."], "empty")],
)
def test_label_comparator_bad_labels(labels, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LabelComparator(labels)
