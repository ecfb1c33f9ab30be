"""Where answers come from: the one protocol the driver calls, whatever answers (live models or arrays).

A source answers "item i with model m" for many pairs at once and returns plain arrays: whether each
answer agrees with the reference's (profiling only), what each call cost, each answer's score in [0, 1]
(NaN where none) and which calls failed. It keeps the answers themselves; the driver only decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from smartmix.policies.base import Plan


@dataclass(frozen=True, eq=False)
class Observation:
    """A profiled batch: row per item, column per model of the batch (the policy's ``observe`` arrays).

    ``failed``: which calls gave no answer (None: none failed). A failed call counts as disagreeing, and
    ``agree`` is all False when the batch has no reference call.
    """

    agree: np.ndarray
    cost: np.ndarray
    score: np.ndarray
    failed: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Answers:
    """One application call per (item, model) pair asked for: its cost, score (NaN where none or failed)
    and whether it failed (None: none did)."""

    cost: np.ndarray
    score: np.ndarray
    failed: np.ndarray | None = None


class AnswerSource(Protocol):
    """What the driver runs on: live models behind a journal, or known arrays."""

    @property
    def chunk(self) -> int | None:
        """Remaining items applied per step (progress and memory bound); None: all at once."""
        ...

    async def profile(self, items: np.ndarray, models: tuple[int, ...]) -> Observation:
        """Call every model of ``models`` (pool indices) on every item of ``items``."""
        ...

    async def answer(self, items: np.ndarray, models: np.ndarray) -> Answers:
        """Call ``models[k]`` on ``items[k]`` for every k (application)."""
        ...

    def planned(self, plan: Plan) -> None:
        """The policy's plan, once profiling is over and before any application call (checks, warnings)."""
        ...

    def report(self, phase: str, done: int, total: int | None) -> None:
        """Progress: ``done`` items of ``total`` (None: unknown) in ``phase``."""
        ...


__all__ = ["AnswerSource", "Answers", "Observation"]
