"""A streamed run's answers: read back chunk by chunk (never one object per item held), written atomically.

The rows are those of any run's answers (``id, answer, model, cost, phase, error``). For a replay, each
item's answer is read again from the recorded file, as the final model gave it; for a simulation, it is
drawn again from the seed. Files are written to a temporary name beside the target and renamed over it
once whole, so an error (a line that changed, a full disk) never leaves half a file.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from smartmix.errors import ConfigError, DataError
from smartmix.result import ItemResult, RunResult
from smartmix.stream.columns import CHUNK, RecordedColumns, iter_rows, output_text
from smartmix.tasks import Comparator, LabelComparator

__all__ = ["AnswerRows", "RecordedRows", "RowChunk", "SimulatedRows", "StreamedItems", "StreamedResult", "write_rows"]

COLUMNS = ("id", "answer", "model", "cost", "phase", "error")


@dataclass(frozen=True)
class RowChunk:
    ids: list[str]
    answers: list[str | None]
    models: list[str]
    cost: list[float]
    phase: list[str]

    def items(self) -> Iterator[ItemResult]:
        for row in zip(self.ids, self.answers, self.models, self.cost, self.phase, strict=True):
            yield ItemResult(*row)


class AnswerRows(Protocol):
    n_items: int

    def chunks(self) -> Iterator[RowChunk]: ...


@dataclass(eq=False)
class _Decided:
    """What the run decided per item: the final model (pool index), what it cost, whether profiling answered."""

    names: Sequence[str]
    final: np.ndarray
    spent: np.ndarray
    profiled: np.ndarray
    chunk: int = CHUNK
    report: Callable[[str, int, int | None], None] | None = None  # progress: ("writing", rows done, rows)

    @property
    def n_items(self) -> int:
        return len(self.final)

    def block(self, start: int, ids: list[str], answers: list[str | None]) -> RowChunk:
        stop = start + len(ids)
        if self.report is not None:
            self.report("writing", stop, self.n_items)
        final = self.final[start:stop].tolist()
        phases = np.where(self.profiled[start:stop], "profiling", "application").tolist()
        return RowChunk(ids, answers, [self.names[m] for m in final], self.spent[start:stop].tolist(), phases)


@dataclass(eq=False)
class RecordedRows(_Decided):
    """The answers of a replay, read again from the recorded file."""

    columns: RecordedColumns | None = None
    comparator: Comparator | None = None
    _labels: dict[str, Any] = field(default_factory=dict)

    def chunks(self) -> Iterator[RowChunk]:
        columns = self.columns
        columns.check_unchanged()
        labelled = isinstance(self.comparator, LabelComparator)
        ids: list[str] = []
        answers: list[str | None] = []
        start = 0
        for i, (lineno, row) in enumerate(iter_rows(columns.path)):
            if i >= self.n_items:
                break
            name = self.names[self.final[i]]
            try:
                text = output_text(row["outputs"][name]["answer"])
            except (KeyError, TypeError):
                raise DataError(f"{columns.path}, line {lineno}: changed while the run was reading it") from None
            answers.append(self._label(text) if labelled else text.strip())
            ids.append(str(row["id"]))
            if len(ids) >= self.chunk:
                yield self.block(start, ids, answers)
                start += len(ids)
                ids, answers = [], []
        if ids:
            yield self.block(start, ids, answers)
        columns.check_unchanged()
        if start + len(ids) != self.n_items:
            raise DataError(f"{columns.path} changed while the run was reading it; run again on a file that stays put")

    def _label(self, text: str) -> str:
        label = self._labels.get(text)
        if label is None:
            if len(self._labels) > 100_000:
                self._labels.clear()
            parsed = self.comparator.parse(text)
            label = self._labels[text] = parsed if parsed is not None else text.strip()
        return label


@dataclass(eq=False)
class SimulatedRows(_Decided):
    """The answers of a simulated run, drawn again from its seed (as the simulated backend answers)."""

    prefix: str = ""
    seed: int = 0
    n_labels: int = 2
    agrees: np.ndarray | None = None  # per item: the final model agrees with the reference
    answer: Callable[[int, str, str, bool, int], str] | None = None

    def chunks(self) -> Iterator[RowChunk]:
        for start in range(0, self.n_items, self.chunk):
            stop = min(self.n_items, start + self.chunk)
            ids = [f"{self.prefix}{i}" for i in range(start, stop)]
            final = self.final[start:stop].tolist()
            agrees = self.agrees[start:stop].tolist()
            answers = [
                self.answer(self.seed, key, self.names[m], a, self.n_labels)
                for key, m, a in zip(ids, final, agrees, strict=True)
            ]
            yield self.block(start, ids, answers)


def write_rows(rows: AnswerRows, path: str | Path) -> Path:
    """Write the answers as JSONL, CSV or Parquet (by extension), a chunk at a time, whole or not at all."""
    from smartmix.runs import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv", ".parquet", ".pq"):
        raise ConfigError(f"cannot write '{path}': use a .jsonl, .csv or .parquet file name")
    with atomic_path(path) as tmp:
        if suffix in (".jsonl", ".ndjson"):
            with open(tmp, "wb") as f:
                for chunk in rows.chunks():
                    f.write(b"".join(
                        orjson.dumps(dict(zip(COLUMNS, row, strict=True)), option=orjson.OPT_APPEND_NEWLINE)
                        for row in zip(chunk.ids, chunk.answers, chunk.models, chunk.cost, chunk.phase,
                                       [None] * len(chunk.ids), strict=True)
                    ))
        elif suffix == ".csv":
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(COLUMNS)
                for chunk in rows.chunks():
                    writer.writerows(zip(chunk.ids, chunk.answers, chunk.models, chunk.cost, chunk.phase,
                                         [""] * len(chunk.ids), strict=True))
        else:
            _write_parquet(rows, tmp)
    return path


def _write_parquet(rows: AnswerRows, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("answer", pa.string()), ("model", pa.string()),
                        ("cost", pa.float64()), ("phase", pa.string()), ("error", pa.string())])
    with pq.ParquetWriter(tmp, schema) as writer:
        for chunk in rows.chunks():
            n = len(chunk.ids)
            writer.write_table(pa.table(
                [chunk.ids, chunk.answers, chunk.models, chunk.cost, chunk.phase, pa.nulls(n, pa.string())],
                schema=schema,
            ))


class StreamedItems(Sequence[ItemResult]):
    """A run's per-item results, read back a chunk at a time when iterated (nothing held per item)."""

    def __init__(self, rows: AnswerRows):
        self.rows = rows

    def __len__(self) -> int:
        return self.rows.n_items

    def __iter__(self) -> Iterator[ItemResult]:
        for chunk in self.rows.chunks():
            yield from chunk.items()

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return next(islice(iter(self), index, None))


class StreamedResult(RunResult):
    """A :class:`RunResult` whose items are streamed: ``items`` reads them back when iterated, ``write``
    streams them to a file. No item of a replay or a simulation fails. ``execution``: what the driver decided
    (plan, final model and cost per item)."""

    execution: Any = None

    @property
    def rows(self) -> AnswerRows:
        return self.items.rows  # type: ignore[attr-defined]

    @property
    def failures(self) -> list[ItemResult]:
        return []

    def write(self, path: str | Path) -> Path:
        return write_rows(self.rows, path)

    def to_pandas(self):
        import pandas as pd

        frames = [
            pd.DataFrame({"id": c.ids, "answer": c.answers, "model": c.models, "cost": c.cost, "phase": c.phase,
                          "error": [None] * len(c.ids)})
            for c in self.rows.chunks()
        ]
        return pd.concat(frames, ignore_index=True)
