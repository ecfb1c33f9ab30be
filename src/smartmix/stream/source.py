"""The streaming answer source: the offline source over recorded columns, keeping the books the engine keeps.

The driver (:func:`smartmix.core.driver.execute`) runs on it exactly as on any other source; on top of the
offline source's answers it counts what the live engine counts for a run's report: the bill per model and
phase (a pair asked again in the same run is not paid or counted again), how many answers each model gave,
how many were blank or unreadable, and which labels occurred.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from smartmix.core.offline import OfflineSource
from smartmix.core.source import Answers, Observation
from smartmix.engine import answer_warnings, reference_only_warning
from smartmix.policies import Plan
from smartmix.result import Ledger
from smartmix.tasks import Comparator

__all__ = ["AnswerFlags", "StreamSource"]

Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True, eq=False)
class AnswerFlags:
    """Per item and pool model: the answer was blank, the comparator could not read it, its label (-1: none)."""

    blank: np.ndarray
    unparsed: np.ndarray
    label: np.ndarray | None = None
    labels: tuple[str, ...] = ()


class StreamSource(OfflineSource):
    """Answers from (items x pool models) arrays, in steps of ``chunk`` remaining items, with the run's books."""

    def __init__(
        self, agree: np.ndarray, cost: np.ndarray, score: np.ndarray, models: tuple[str, ...], flags: AnswerFlags,
        comparator: Comparator, *, chunk: int, progress: Progress | None = None,
        warn: Callable[[str], None] | None = None,
    ):
        super().__init__(agree, cost, score)
        self.models = models
        self.flags = flags
        self.comparator = comparator
        self.chunk = chunk
        self.progress = progress
        self.warn = warn
        self.ledger = Ledger()
        self.seen = {m: [0, 0, 0] for m in models}  # per model: answers, blank, unreadable
        self.labels_seen: set[str] = set()
        self.unparseable = {m: 0 for m in models}

    async def profile(self, items: np.ndarray, models: tuple[int, ...]) -> Observation:
        before = self.called[items]
        seen = await super().profile(items, models)
        for c, m in enumerate(models):
            new = (before >> m) & 1 == 0  # a pair asked again is shared, not paid or counted again
            self._count(items[new], m, "profiling", seen.cost[new, c])
        return seen

    async def answer(self, items: np.ndarray, models: np.ndarray) -> Answers:
        got = await super().answer(items, models)
        for m in np.unique(models).tolist():
            mine = models == m
            self._count(items[mine], m, "application", got.cost[mine])
        return got

    def _count(self, items: np.ndarray, m: int, phase: str, cost: np.ndarray) -> None:
        if not len(items):
            return
        name = self.models[m]
        key = (name, phase)
        self.ledger.entries[key] += float(cost.sum())
        self.ledger.calls[key] += len(items)
        blank = int(self.flags.blank[items, m].sum())
        unparsed = int(self.flags.unparsed[items, m].sum())
        seen = self.seen[name]
        seen[0] += len(items)
        seen[1] += blank
        seen[2] += unparsed
        self.unparseable[name] += unparsed
        if self.flags.label is not None:
            codes = np.unique(self.flags.label[items, m])
            self.labels_seen.update(self.flags.labels[k] for k in codes.tolist() if k >= 0)

    def planned(self, plan: Plan) -> None:
        self._check(final=True)
        spent = sum(c for (m, _), c in self.ledger.entries.items() if m != self.models[-1])
        message = reference_only_warning(plan, len(self.models), spent)
        if message is not None and self.warn is not None:
            self.warn(message)

    def report(self, phase: str, done: int, total: int | None) -> None:
        if phase == "profiling":  # as the engine: answers that cannot lead anywhere are said early
            self._check(final=False)
        if self.progress is not None:
            self.progress(phase, done, total)

    def _check(self, final: bool) -> None:
        if self.warn is not None:
            for message in answer_warnings(self.seen, self.labels_seen, self.comparator, final):
                self.warn(message)
