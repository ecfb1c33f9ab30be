"""The chain rule, once: a stage keeps its answer iff its score is strictly above the stage's threshold.

A plan with a chain (``Plan.chain``, ``Plan.thresholds``) sends every remaining item through the chain's
models in order, starting at the item's entry stage (``Plan.entry``; stage 0 when None); the first stage
whose score clears its threshold keeps the answer, and the reference answers what no stage kept. A score
that is NaN (no score, or a failed call) never keeps: the item moves up. The batch core and the server's
cascade route both decide with :func:`keeps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import numpy as np


@overload
def keeps(score: float | None, threshold: float) -> bool: ...
@overload
def keeps(score: np.ndarray, threshold: float | np.ndarray) -> np.ndarray: ...
def keeps(score, threshold):
    """Whether a stage keeps its answer: ``score > threshold``, strictly; NaN (or None) never keeps.

    Scalars give a bool, arrays an elementwise bool array.
    """
    if isinstance(score, np.ndarray) or isinstance(threshold, np.ndarray):
        return np.greater(score, threshold)  # NaN compares False
    if score is None:
        return False
    return bool(float(score) > threshold)


@dataclass(frozen=True)
class Stage:
    """One stage of a chain: ``model`` answers; its answer stays iff :func:`keeps` (the reference always keeps)."""

    model: int
    threshold: float  # -inf for the reference, which keeps every answer it gives

    @property
    def final(self) -> bool:
        return self.threshold == -math.inf


def stages(chain: tuple[int, ...], thresholds: tuple[float, ...], reference: int) -> list[Stage]:
    """The chain's stages, the reference last."""
    if len(thresholds) != len(chain):
        raise ValueError(f"a chain of {len(chain)} models needs as many thresholds, got {len(thresholds)}")
    return [*(Stage(int(m), float(t)) for m, t in zip(chain, thresholds, strict=True)), Stage(reference, -math.inf)]


def kept(stage: Stage, score: np.ndarray, failed: np.ndarray | None = None) -> np.ndarray:
    """Which answers a stage keeps: all but the failed ones at the reference, else :func:`keeps`."""
    if stage.final:
        return np.ones(len(score), dtype=bool)
    keep = keeps(score, stage.threshold)
    return keep if failed is None else keep & ~failed


__all__ = ["Stage", "keeps", "kept", "stages"]
