"""A live progress display for long runs: phase, items done, money spent."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressDisplay:
    """Context manager whose :meth:`update` is the engine's progress callback."""

    def __init__(self, n_items: int, *, enabled: bool = True, console: Console | None = None):
        self.n_items = n_items
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("spent ${task.fields[spent]:.4f}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
            disable=not enabled,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressDisplay:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def update(self, event: dict[str, Any]) -> None:
        phase = event["phase"]
        total = event.get("total")
        if phase not in self._tasks:
            self._tasks[phase] = self._progress.add_task(phase, total=total, phase=phase, spent=0.0)
        task = self._tasks[phase]
        self._progress.update(task, completed=event["done"], total=total, spent=event["spent"])
