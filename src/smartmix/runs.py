"""Run directories: one journal for all runs (resume and cache), one folder of outputs per run.

:func:`open_run` is a run's lifecycle in a run directory, the same for the CLI and the Python API:
take the run's lock (a second process on the same run refuses; the lock of a dead process is free),
open the journal, register or resume the run, and on the way out record how it ended
(``done``, ``done-with-failures``, ``stopped-at-max-cost``, ``interrupted`` or ``failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartmix.errors import BudgetExceeded, ConfigError, RunInterrupted, RunLocked

JOURNAL_NAME = "journal.sqlite"
ANSWER_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet", ".pq")


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_id_for(settings: dict[str, Any]) -> str:
    """The same command on the same data gets the same run id, so rerunning it resumes the run."""
    canonical = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class RunDirectory:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"the run directory {self.root} is a file; give a folder (--run-dir DIR)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the run directory {self.root}: {exc.strerror or exc}") from None

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL_NAME

    def open_journal(self):
        from smartmix.journal import Journal

        return Journal(self.journal_path)

    def outputs(self, run_id: str) -> Path:
        path = self.root / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def lock_path(self, run_id: str) -> Path:
        return self.root / f".{run_id}.lock"


# --------------------------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def run_lock(path: Path, run_id: str) -> Iterator[None]:
    """Hold the run's lock (an OS file lock: it dies with the process, so a crashed run leaves none)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLocked(
            f"run {run_id} is already running in {path.parent} (another process holds {path.name}). Wait for "
            "it to finish, or stop it (Ctrl-C) and rerun: paid calls are kept in the journal."
        ) from None
    try:
        yield
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------- the run


@dataclass
class OpenRun:
    """A run registered in its directory's journal, held under its lock."""

    directory: RunDirectory
    run_id: str
    journal: Any
    resumed: bool
    status: str = "failed"  # what finish_run records unless the run says otherwise

    @property
    def outputs(self) -> Path:
        return self.directory.outputs(self.run_id)


def status_for(exc: BaseException | None, failures: int = 0) -> str:
    if exc is None:
        return "done-with-failures" if failures else "done"
    if isinstance(exc, BudgetExceeded):
        return "stopped-at-max-cost"
    if isinstance(exc, RunInterrupted | KeyboardInterrupt | asyncio.CancelledError):
        return "interrupted"
    return "failed"


@contextlib.contextmanager
def open_run(directory: RunDirectory, settings: dict[str, Any], seed: int) -> Iterator[OpenRun]:
    """Lock, open and register the run described by ``settings``; record how it ended on the way out."""
    run_id = run_id_for(settings)
    with run_lock(directory.lock_path(run_id), run_id):
        journal = directory.open_journal()
        try:
            resumed = journal.start_run(run_id, settings, seed)
            run = OpenRun(directory, run_id, journal, resumed)
            try:
                yield run
            except BaseException as exc:
                run.status = status_for(exc)
                raise
            finally:
                journal.finish_run(run_id, run.status)
        finally:
            journal.close()


# ------------------------------------------------------------------------------------------- outputs


def check_outputs(
    outputs: Iterable[str | Path | None], inputs: Iterable[str | Path | None], *, answers: str | Path | None = None
) -> None:
    """Refuse, before anything is spent, an output path that is one of the inputs (or another output), or
    an ``answers`` file whose format cannot be written."""
    seen: dict[Path, str] = {}
    for path in inputs:
        if path is not None and not _is_frame(path):
            seen[_resolved(path)] = f"the input {path}"
    for path in outputs:
        if path is None:
            continue
        target = _resolved(path)
        if target in seen:
            raise ConfigError(
                f"refusing to write {path}: it is {seen[target]}. Choose another output file name."
            )
        if target.is_dir():
            raise ConfigError(f"cannot write {path}: it is a folder; give a file name")
        seen[target] = f"another output ({path})"
    if answers is not None and Path(answers).suffix.lower() not in ANSWER_SUFFIXES:
        raise ConfigError(f"cannot write answers to '{answers}': use a .jsonl, .csv or .parquet file name")


def _is_frame(value: Any) -> bool:
    return not isinstance(value, str | os.PathLike)


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that replaces ``path`` only once written whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_run_outputs(run: OpenRun, result: Any, certificate: Callable[[Any], dict[str, Any]]) -> Path:
    """The run's answers and certificate in its outputs folder, each written whole or not at all."""
    folder = run.outputs
    result.write(folder / "answers.jsonl")
    write_text_atomic(folder / "certificate.json", json.dumps(certificate(result), indent=2, default=str))
    return folder


__all__ = [
    "JOURNAL_NAME", "OpenRun", "RunDirectory", "atomic_path", "check_outputs", "file_digest", "open_run",
    "run_id_for", "run_lock", "status_for", "write_run_outputs", "write_text_atomic",
]
