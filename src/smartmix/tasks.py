"""Task items, prompt templates, and how two answers are compared.

An *item* is one row of the user's batch. A *template* turns an item into the messages sent to a model.
A *comparator* decides whether a model's answer agrees with the reference's answer — the quantity
smartmix guarantees — so it is deliberately strict: an answer it cannot parse never agrees.
"""

from __future__ import annotations

import bz2
import gzip
import json
import math
import re
import string
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

from smartmix.domain import Message
from smartmix.errors import ConfigError, DataError, TemplateError

if TYPE_CHECKING:
    import pandas

__all__ = [
    "Item",
    "load_items",
    "read_jsonl",
    "Template",
    "normalize_answer",
    "Comparator",
    "ExactComparator",
    "LabelComparator",
    "SUPPORTED_EXTENSIONS",
]


@dataclass(frozen=True)
class Item:
    """One task item: its id and every column/key of its row (the id column included)."""

    id: str
    fields: Mapping[str, Any] = field(hash=False)


# ---------------------------------------------------------------------------------------------------
# Loading items

_JSONL = (".jsonl", ".ndjson")
_CSV = (".csv", ".tsv")
_PARQUET = (".parquet", ".pq")
_COMPRESSION = (".gz", ".bz2")
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    *_JSONL,
    *_CSV,
    *_PARQUET,
    *(f"{ext}{comp}" for ext in (*_JSONL, *_CSV) for comp in _COMPRESSION),
)


def load_items(source: str | Path | pandas.DataFrame, *, id_field: str = "id") -> list[Item]:
    """Read a batch of items from a JSONL, CSV/TSV or Parquet file (chosen by extension) or a DataFrame.

    Rows without an ``id_field`` column get ids ``"row-<n>"`` (n counts rows from 0). Missing values
    (JSON null, empty CSV cells, NaN/NA in tables) become ``None``. CSV cells are kept as text, so ids
    like ``007`` survive.
    """
    if not isinstance(source, str | Path):
        return _items_from_rows(_dataframe_rows(source), id_field=id_field, origin="the DataFrame")
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"items file not found: {path}. Check the path (relative paths start at {Path.cwd()})."
        )
    if path.is_dir():
        raise DataError(f"{path} is a folder; give one items file ({', '.join(SUPPORTED_EXTENSIONS)}).")
    kind = _file_kind(path)
    if kind == "jsonl":
        rows: list[dict[str, Any]] = [row for _, row in read_jsonl(path)]
    elif kind in ("csv", "tsv"):
        rows = _read_csv(path, sep="\t" if kind == "tsv" else ",")
    else:
        rows = _read_parquet(path)
    if not rows:
        raise DataError(f"{path} holds no items (the file is empty). Put one item per line/row in it.")
    return _items_from_rows(rows, id_field=id_field, origin=str(path))


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    base = name.removesuffix(".gz").removesuffix(".bz2")
    if base.endswith(_JSONL):
        return "jsonl"
    if base.endswith(".csv"):
        return "csv"
    if base.endswith(".tsv"):
        return "tsv"
    if name.endswith(_PARQUET):
        return "parquet"
    raise DataError(
        f"cannot read {path}: unknown file type. Supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}; "
        "or pass a pandas DataFrame."
    )


def _open_text(path: Path) -> IO[str]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a (possibly compressed) JSONL file.

    A line that is not a JSON object raises DataError naming the file and the line.
    """
    path = Path(path)
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}, line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}). "
                        "Each line must hold exactly one JSON object; fix or delete that line."
                    ) from None
                if not isinstance(obj, dict):
                    raise DataError(
                        f"{path}, line {lineno}: expected a JSON object {{...}}, found {type(obj).__name__}. "
                        "Each line must hold exactly one JSON object."
                    )
                yield lineno, obj
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason}); save it as UTF-8.") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _read_csv(path: Path, sep: str) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        # Everything as text; only empty cells count as missing ("NA" or "null" may be real answers).
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        return []
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} as {'TSV' if sep == chr(9) else 'CSV'}: {exc}") from None
    return _dataframe_rows(df)


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"cannot read {path} as Parquet: {exc}") from None
    return _dataframe_rows(df)


def _dataframe_rows(df: Any) -> list[dict[str, Any]]:
    """Rows of a DataFrame as dicts of plain Python values (missing values as None), column by column."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"cannot load items from a {type(df).__name__}; give a file path or a pandas DataFrame."
        )
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise DataError(f"the items have duplicate column names ({', '.join(names)}); rename them.")
    columns = []
    for k in range(df.shape[1]):
        column = df.iloc[:, k]
        values = column.tolist()
        missing = column.isna().to_numpy()
        if missing.any():
            values = [None if gone else v for v, gone in zip(values, missing, strict=True)]
        if column.dtype == object:  # may hold numpy values (Parquet list columns), NaN, pd.NA
            values = [_native(v) for v in values]
        columns.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _native(value: Any) -> Any:
    """A plain Python value: numpy scalars and arrays unwrapped, NaN/NA/NaT as None."""
    import pandas as pd

    if hasattr(value, "tolist") and hasattr(value, "ndim"):
        value = value.tolist()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _id_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return text if text.strip() else None


def _items_from_rows(rows: Sequence[dict[str, Any]], *, id_field: str, origin: str) -> list[Item]:
    if not rows:
        raise DataError(f"{origin} holds no items.")
    has_ids = any(id_field in row for row in rows)
    items: list[Item] = []
    seen: set[str] = set()
    for n, row in enumerate(rows):
        if has_ids:
            item_id = _id_text(row.get(id_field))
            if item_id is None:
                raise DataError(
                    f"{origin}: row {n} has no value in the id column '{id_field}'. "
                    "Give every row an id, or drop the column to number rows automatically."
                )
        else:
            item_id = f"row-{n}"
        if item_id in seen:
            raise DataError(
                f"{origin}: duplicate item id '{item_id}' (row {n}). Ids must be unique; "
                f"fix the '{id_field}' column or choose another with --id-field."
            )
        seen.add(item_id)
        items.append(Item(id=item_id, fields=row))
    return items


# ---------------------------------------------------------------------------------------------------
# Templates

_FORMATTER = string.Formatter()


def _root_fields(text: str) -> frozenset[str]:
    """The item fields a ``str.format`` template uses (``{meta[subject]}`` uses ``meta``)."""
    names: set[str] = set()
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise ConfigError(
            f"prompt template {text!r} is malformed ({exc}). Fields look like {{text}}; "
            "write a literal brace as {{ or }}."
        ) from None
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not root or root.isdigit():
            raise ConfigError(
                f"prompt template {text!r} has a positional field {{{name}}}; name the item field instead, "
                "e.g. {text}. Write a literal brace as {{ or }}."
            )
        names.add(root)
        if spec:
            names |= _root_fields(spec)
    return frozenset(names)


@dataclass(frozen=True)
class Template:
    """A prompt template with ``str.format`` fields filled from an item, e.g. ``"Review: {text}"``.

    ``system_optional`` drops the system message when any of its fields is missing or null in an item,
    instead of failing: recorded outputs may or may not have a system message per item.
    """

    user: str
    system: str | None = None
    system_optional: bool = False

    def __post_init__(self) -> None:
        _root_fields(self.user)
        if self.system is not None:
            _root_fields(self.system)

    @property
    def fields(self) -> frozenset[str]:
        """Every item field the template uses."""
        system = _root_fields(self.system) if self.system is not None else frozenset()
        return _root_fields(self.user) | system

    @property
    def required_fields(self) -> frozenset[str]:
        """The fields an item must have (the optional system message's fields excluded)."""
        if self.system is None or self.system_optional:
            return _root_fields(self.user)
        return self.fields

    @classmethod
    def recorded(cls) -> Template:
        """The recorded-outputs layout: ``system`` and ``prompt`` fields are the exact messages."""
        return cls(user="{prompt}", system="{system}", system_optional=True)

    def render(self, item: Item) -> tuple[Message, ...]:
        """The messages for one item, the system message first when there is one."""
        self._check_item(item)
        messages = []
        if self.system is not None and self._system_present(item):
            messages.append(Message("system", self._fill(self.system, item)))
        messages.append(Message("user", self._fill(self.user, item)))
        return tuple(messages)

    def check(self, items: Sequence[Item]) -> None:
        """Raise TemplateError on the first item that lacks a field the template needs."""
        for item in items:
            self._check_item(item)

    def _system_present(self, item: Item) -> bool:
        assert self.system is not None
        if not self.system_optional:
            return True
        return all(item.fields.get(name) is not None for name in _root_fields(self.system))

    def _check_item(self, item: Item) -> None:
        for name in sorted(self.required_fields):
            if name not in item.fields:
                have = ", ".join(sorted(map(str, item.fields))) or "none"
                raise TemplateError(
                    f"the prompt template uses the field '{name}', but item '{item.id}' has no such field "
                    f"(it has: {have}). Fix the template or the items file."
                )

    @staticmethod
    def _fill(text: str, item: Item) -> str:
        # A null value (empty CSV cell) renders as an empty string, not "None".
        values = {k: ("" if v is None else v) for k, v in item.fields.items()}
        try:
            return text.format_map(values)
        except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
            raise TemplateError(
                f"cannot fill the prompt template {text!r} for item '{item.id}': "
                f"{type(exc).__name__}: {exc}. Check the field's value and format spec."
            ) from None


# ---------------------------------------------------------------------------------------------------
# Answers

_QUOTES = "\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb\u2039\u203a"
# Not "-" or "+" (signs of numbers), "$", "%" or "#": those change what an answer means.
_SURROUNDING = string.whitespace + _QUOTES + "()[]{}<>.,;:!?*\u3002\uff0c"


def normalize_answer(text: str | None) -> str:
    """Canonical text of an answer: NFKC, casefolded, inner whitespace collapsed, and quotes, brackets,
    sentence punctuation and markdown emphasis stripped from both ends. ``None`` becomes ``""``.

    ``"  (B). "`` -> ``"b"``; ``"**Paris**"`` -> ``"paris"``; ``"-3"`` stays ``"-3"``.
    """
    if text is None:
        return ""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = " ".join(text.split())
    return text.strip(_SURROUNDING)


@runtime_checkable
class Comparator(Protocol):
    """Turns model outputs into canonical answers and says whether two outputs agree."""

    def parse(self, text: str | None) -> str | None:
        """The canonical answer, or None when the text holds no usable answer."""
        ...

    def agree(self, a: str | None, b: str | None) -> bool:
        """Whether two outputs give the same answer. An unparseable output never agrees."""
        ...


@dataclass(frozen=True)
class ExactComparator:
    """Open answers: equal after :func:`normalize_answer`."""

    def parse(self, text: str | None) -> str | None:
        answer = normalize_answer(text)
        return answer or None

    def agree(self, a: str | None, b: str | None) -> bool:
        pa = self.parse(a)
        return pa is not None and pa == self.parse(b)


@dataclass(frozen=True, init=False)
class LabelComparator:
    """Closed answers: each output maps to one of ``labels`` (returned as given), or to None.

    The text matches a label when, case-insensitively and after normalisation, it equals the label, or
    starts with the label followed by a non-word character ("positive review", "B) 42"; the longest such
    label wins, so "very positive" beats "very"), or its first word equals the label. A bare prefix is not
    enough: "no" must not match "not sure", nor "A" match "As an AI".
    """

    labels: tuple[str, ...]

    def __init__(self, labels: Sequence[str]):
        if isinstance(labels, str):
            raise ConfigError(f"labels must be a list of strings, not the single string {labels!r}")
        labels = tuple(str(label) for label in labels)
        if not labels:
            raise ConfigError("a label comparator needs at least one label")
        keys: dict[str, str] = {}
        for label in labels:
            key = normalize_answer(label)
            if not key:
                raise ConfigError(f"label {label!r} is empty after normalisation; give a real label")
            if key in keys:
                raise ConfigError(f"labels {keys[key]!r} and {label!r} are the same after normalisation")
            keys[key] = label
        object.__setattr__(self, "labels", labels)
        # Longest first, so "very positive" wins over "very" when both are labels.
        object.__setattr__(self, "_keys", tuple(sorted(keys.items(), key=lambda kv: -len(kv[0]))))

    def parse(self, text: str | None) -> str | None:
        norm = normalize_answer(text)
        if not norm:
            return None
        keys: tuple[tuple[str, str], ...] = self._keys  # type: ignore[attr-defined]
        lookup = dict(keys)
        if norm in lookup:
            return lookup[norm]
        for key, label in keys:  # longest label first
            if norm.startswith(key) and (len(norm) == len(key) or not norm[len(key)].isalnum()):
                return label
        first = norm.split(" ", 1)[0].strip(_SURROUNDING)
        return lookup.get(first)

    def agree(self, a: str | None, b: str | None) -> bool:
        pa = self.parse(a)
        return pa is not None and pa == self.parse(b)
