"""Run directories: one journal for all runs (resume and cache), one folder of outputs per run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

JOURNAL_NAME = "journal.sqlite"


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
        self.root.mkdir(parents=True, exist_ok=True)

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
