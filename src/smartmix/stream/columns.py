"""Recorded outputs read as columns: one pass over the file, a chunk of lines at a time, no object per item.

Each line is parsed (orjson), checked as strictly as :meth:`RecordedOutputs.load` checks it (the same
messages, naming the line), and reduced to a few numbers per model: the recorded cost (NaN when none),
the confidence, whether the comparator could read the answer, whether it was blank, its label (label
comparators) and whether it agrees with the reference. Answer texts are interned per chunk, so the
comparator runs once per distinct answer (and once per distinct pair of answers when agreement is more
than equality); they are then dropped: the writer reads them again from the file, chunk by chunk.

What stays in memory is about 30 bytes per item and model, whatever the length of prompts and answers.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from smartmix.backends.replay import estimated_usage, parse_item, parse_output
from smartmix.errors import DataError
from smartmix.tasks import Comparator, ExactComparator, Item, LabelComparator

__all__ = ["CHUNK", "RecordedColumns", "iter_rows", "load_columns", "open_lines", "output_text"]

CHUNK = 16_384  # lines per chunk, both passes
_NUM = frozenset({float, int, type(None)})
_INT = frozenset({int, type(None)})
_FLAG = frozenset({bool, type(None)})
_MISSING = object()
Progress = Callable[[str, int, int | None], None]


def open_lines(path: Path) -> IO[bytes]:
    """The file's raw lines (``.gz`` and ``.bz2`` decompressed on the fly)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb", buffering=1 << 20)


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line; a line that is not a JSON object is a DataError naming it."""
    try:
        with open_lines(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    row = _loads_lenient(line, path, lineno)  # NaN and Infinity, as the item loader reads them
                if type(row) is not dict:
                    raise DataError(
                        f"{path}, line {lineno}: expected a JSON object {{...}}, found {type(row).__name__}. "
                        "Each line must hold exactly one JSON object."
                    )
                yield lineno, row
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _loads_lenient(line: bytes, path: Path, lineno: int) -> Any:
    try:
        return json.loads(line)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason}); save it as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}, line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}). "
            "Each line must hold exactly one JSON object; fix or delete that line."
        ) from None


def output_text(answer: Any) -> str:
    """The text a replayed call returns for a recorded answer (a bare number is the model's text too)."""
    if answer is None:
        return ""
    return answer if type(answer) is str else str(answer)


@dataclass(eq=False)
class RecordedColumns:
    """Per item (row, in file order) and recorded model (column, in order of first appearance).

    ``agree[k]``: agreement of every column with column k (as the engine judges it against a reference k).
    ``usage``: for cells without a recorded cost, (row, column, input tokens, output tokens), recorded or
    estimated, for pricing with the pool.
    """

    path: Path
    models: tuple[str, ...]
    lines: np.ndarray  # line number of each row
    present: np.ndarray
    cost: np.ndarray
    confidence: np.ndarray
    unparsed: np.ndarray
    blank: np.ndarray
    label: np.ndarray | None
    agree: dict[int, np.ndarray]
    usage: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    fingerprint: tuple[int, int]
    labels: tuple[str, ...] = field(default=())

    @property
    def n_items(self) -> int:
        return len(self.lines)

    def mean_cost(self) -> dict[str, float]:
        """Each model's mean recorded cost (NaN: none recorded), summed in file order like the item loader."""
        out = {}
        for j, m in enumerate(self.models):
            col = self.cost[:, j]
            known = col[self.present[:, j] & ~np.isnan(col)]
            out[m] = sum(known.tolist()) / len(known) if len(known) else float("nan")
        return out

    def column(self, model: str) -> int:
        return self.models.index(model)

    def require_complete(self, model: str) -> None:
        """A DataError naming the first item without an output of ``model``."""
        missing = np.flatnonzero(~self.present[:, self.column(model)])
        if len(missing):
            more = f" and {len(missing) - 1} other items" if len(missing) > 1 else ""
            raise DataError(
                f"model '{model}' has no recorded output for the item on line {int(self.lines[missing[0]])}{more} "
                f"in {self.path}; use models recorded for every item, or complete the file"
            )

    def release(self) -> None:
        """Drop the per-item columns (the run has copied what it uses); the path and fingerprint stay."""
        empty = np.zeros((0, len(self.models)))
        self.present = self.cost = self.confidence = self.unparsed = self.blank = empty
        self.label, self.agree = None, {}

    def check_unchanged(self) -> None:
        """The file must be the one that was read: the answers are read from it again."""
        if _fingerprint(self.path) != self.fingerprint:
            raise DataError(f"{self.path} changed while the run was reading it; run again on a file that stays put")


def _fingerprint(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _equality(comparator: Comparator) -> bool:
    """Whether two parsed answers agree exactly when they are equal (no tolerance, no embedding)."""
    from smartmix.comparators import ChoiceComparator, RegexComparator

    return type(comparator) in (ExactComparator, LabelComparator, ChoiceComparator, RegexComparator)


class _Parser:
    """The comparator's reading of each distinct answer text, remembered across chunks (bounded)."""

    def __init__(self, comparator: Comparator, limit: int = 200_000):
        self.comparator = comparator
        self.cache: dict[str, Any] = {}
        self.limit = limit

    def __call__(self, text: str) -> Any:
        got = self.cache.get(text, _MISSING)
        if got is _MISSING:
            if len(self.cache) >= self.limit:
                self.cache.clear()
            got = self.cache[text] = self.comparator.parse(text)
        return got


def load_columns(
    path: str | Path,
    comparator: Comparator,
    references: Sequence[str] | None = None,
    *,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> RecordedColumns:
    """Read a recorded-outputs file into columns (see the module doc).

    ``references``: the models agreement is judged against (None: every model, for when the reference is
    chosen from the recorded costs after reading).
    """
    path = Path(path)
    fingerprint = _fingerprint(path)
    models: dict[str, int] = {}
    parser = _Parser(comparator)
    equality = _equality(comparator)
    labels = tuple(getattr(comparator, "labels", ())) if isinstance(comparator, LabelComparator) else ()
    label_index = {label: k for k, label in enumerate(labels)}
    parts: list[dict[str, Any]] = []
    hashes: list[np.ndarray] = []
    usage: list[tuple[int, int, int, int]] = []
    rows = 0
    cells_row: list[int] = []
    cells_col: list[int] = []
    texts: list[str] = []
    costs: list[Any] = []
    confs: list[Any] = []
    lines: list[int] = []
    ids: list[int] = []

    def flush() -> None:
        nonlocal cells_row, cells_col, texts, costs, confs, lines, ids
        if lines:
            parts.append(_chunk_columns(
                len(lines), len(models), cells_row, cells_col, texts, costs, confs, parser, equality, comparator,
                label_index, references, models,
            ) | {"lines": np.asarray(lines, dtype=np.int64)})
            hashes.append(np.asarray(ids, dtype=np.int64))
        cells_row, cells_col, texts, costs, confs, lines, ids = [], [], [], [], [], [], []
        if progress is not None:
            progress("loading", rows, None)

    for lineno, row in iter_rows(path):
        where = f"{path}, line {lineno}"
        item_id = row.get("id")
        prompt = row.get("prompt")
        if type(item_id) is not str or not item_id.strip() or type(prompt) is not str:
            item_id = parse_item(row, where).id  # the loader's message for a bad id or prompt; else a number id
        outputs = row.get("outputs")
        if type(outputs) is not dict or not outputs:
            raise DataError(f"{where}: 'outputs' must be a non-empty object mapping each model name to its output")
        r = len(lines)
        for name, raw in outputs.items():
            if type(raw) is not dict:
                parse_output(raw, f"{where}, outputs['{name}']")
            answer = raw.get("answer", _MISSING)
            cost = raw.get("cost_usd")
            conf = raw.get("confidence")
            n_in = raw.get("input_tokens")
            n_out = raw.get("output_tokens")
            if (
                (type(answer) is not str and answer is not None) or type(cost) not in _NUM or type(conf) not in _NUM
                or type(n_in) not in _INT or type(n_out) not in _INT or type(raw.get("latency_ms")) not in _NUM
                or type(raw.get("correct")) not in _FLAG or (n_in is not None and n_in < 0)
                or (n_out is not None and n_out < 0)
            ):
                out = parse_output(raw, f"{where}, outputs['{name}']")  # raises the loader's message, or normalises
                answer, cost, conf = out.answer, out.cost_usd, out.confidence
            j = models.get(name)
            if j is None:
                j = models[name] = len(models)
            text = output_text(answer)
            cells_row.append(r)
            cells_col.append(j)
            texts.append(text)
            costs.append(cost)
            confs.append(conf)
            if cost is None:
                out = parse_output(raw, where)
                usage.append((rows, j, *estimated_usage(Item(str(item_id), row), out)))
        lines.append(lineno)
        ids.append(hash(str(item_id)))
        rows += 1
        if len(lines) >= chunk:
            flush()
    flush()
    if not rows:
        raise DataError(f"{path} holds no recorded items (the file is empty)")
    _check_unique_ids(path, np.concatenate(hashes))
    columns = _concatenate(parts, len(models))
    u = np.array(usage, dtype=np.int64).reshape(-1, 4)
    return RecordedColumns(
        path=path, models=tuple(models), fingerprint=fingerprint, labels=labels,
        usage=(u[:, 0], u[:, 1], u[:, 2], u[:, 3]), **columns,
    )


def _chunk_columns(
    n: int, m: int, cells_row: list[int], cells_col: list[int], texts: list[str], costs: list[Any],
    confs: list[Any], parser: _Parser, equality: bool, comparator: Comparator, label_index: Mapping[str, int],
    references: Sequence[str] | None, models: Mapping[str, int],
) -> dict[str, Any]:
    """One chunk's cells (row, column, answer text, cost, confidence) as (n, m) arrays."""
    rows = np.asarray(cells_row, dtype=np.int64)
    cols = np.asarray(cells_col, dtype=np.int64)
    distinct: dict[str, int] = {}
    text_id = np.fromiter((distinct.setdefault(t, len(distinct)) for t in texts), dtype=np.int64, count=len(texts))
    parsed = [parser(t) for t in distinct]
    by_parsed: dict[Any, int] = {}
    parsed_id = np.array([-1 if p is None else by_parsed.setdefault(p, len(by_parsed)) for p in parsed], dtype=np.int64)
    blank = np.array([not t.strip() for t in distinct], dtype=bool)
    present = np.zeros((n, m), dtype=bool)
    present[rows, cols] = True
    pid = np.full((n, m), -2, dtype=np.int64)  # -2: no output, -1: unreadable
    pid[rows, cols] = parsed_id[text_id]
    cell_blank = np.zeros((n, m), dtype=bool)
    cell_blank[rows, cols] = blank[text_id]
    cost = np.full((n, m), np.nan)
    cost[rows, cols] = np.array(costs, dtype=float)
    confidence = np.full((n, m), np.nan)
    confidence[rows, cols] = np.array(confs, dtype=float)
    label = None
    if label_index:
        codes = np.array([label_index.get(p, -1) if p is not None else -1 for p in by_parsed], dtype=np.int16)
        label = np.full((n, m), -1, dtype=np.int16)
        readable = pid >= 0
        label[readable] = codes[pid[readable]]
    values = list(by_parsed)
    refs = range(m) if references is None else [models[r] for r in references if r in models]
    agree = {k: _agreement(pid, k, equality, comparator, values) for k in refs}
    return {
        "present": present, "cost": cost, "confidence": confidence, "unparsed": pid == -1, "blank": cell_blank,
        "label": label, "agree": agree,
    }


def _agreement(pid: np.ndarray, k: int, equality: bool, comparator: Comparator, values: list[Any]) -> np.ndarray:
    """Whether each column's answer agrees with column k's (k's own column: wherever k answered)."""
    ref = pid[:, k : k + 1]
    readable = (pid >= 0) & (ref >= 0)
    if equality:
        agree = readable & (pid == ref)
    else:
        agree = np.zeros(pid.shape, dtype=bool)
        rows, cols = np.nonzero(readable)
        pairs = pid[rows, cols] * len(values) + ref[rows, 0]
        unique, inverse = np.unique(pairs, return_inverse=True)
        verdict = np.array(
            [comparator.agree(values[p // len(values)], values[p % len(values)]) for p in unique.tolist()], dtype=bool
        )
        agree[rows, cols] = verdict[inverse]
    agree[:, k] = pid[:, k] != -2
    return agree


def _concatenate(parts: list[dict[str, Any]], m: int) -> dict[str, Any]:
    """The chunks stacked; a model first seen in a later chunk has no output on the earlier rows."""

    def stack(name: str, fill: Any, dtype: Any) -> np.ndarray:
        blocks = []
        for part in parts:
            block = part[name]
            if block.shape[1] < m:
                wide = np.full((block.shape[0], m), fill, dtype=dtype)
                wide[:, : block.shape[1]] = block
                block = wide
            blocks.append(block)
        return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]

    out = {
        "present": stack("present", False, bool), "cost": stack("cost", np.nan, float),
        "confidence": stack("confidence", np.nan, float), "unparsed": stack("unparsed", False, bool),
        "blank": stack("blank", False, bool),
        "label": stack("label", -1, np.int16) if parts[0]["label"] is not None else None,
        "lines": np.concatenate([p["lines"] for p in parts]),
    }
    agree = {}
    for k in set().union(*(p["agree"] for p in parts)):
        blocks = []
        for part in parts:
            block = part["agree"].get(k)
            n = len(part["lines"])
            wide = np.zeros((n, m), dtype=bool)
            if block is not None:
                wide[:, : block.shape[1]] = block
            blocks.append(wide)
        agree[k] = np.concatenate(blocks)
    out["agree"] = agree
    for part in parts:
        part.clear()
    return out


def _check_unique_ids(path: Path, hashes: np.ndarray) -> None:
    """Every line needs its own id: a duplicate is found by hash, then confirmed on the text of the ids."""
    ordered = np.sort(hashes)
    clashes = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not clashes:
        return
    seen: set[str] = set()
    for lineno, row in iter_rows(path):
        item_id = str(row.get("id"))
        if hash(item_id) in clashes:
            if item_id in seen:
                raise DataError(f"{path}, line {lineno}: duplicate item id '{item_id}'; every line needs its own id")
            seen.add(item_id)
