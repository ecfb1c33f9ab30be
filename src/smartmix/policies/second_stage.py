"""A second stage for the score-first cascade: per-stage thresholds through one certified order.

The head has scored every item. Items whose head score is at or below a *split* go to a second candidate,
which answers and scores them. One order is then formed before any certification label is read: the
head's items (score above the split) first, by head score, then the second model's items, by its own score.
Each item's answer in that order is its group's model, so keeping the first k items keeps the head's most
confident answers and then the second model's most confident ones: the head's threshold is the split, the
second model's threshold is wherever the certified prefix ends. The prefix test of
:mod:`smartmix.policies.prefix_test` applies unchanged, with "wrong" meaning the item's own group's model
disagrees with the reference: the order and every item's answer are fixed before the sample is read.

Scores lie in [0, 1], so head-group keys ``2 + score`` sort above every second-group key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from smartmix.policies.prefix_test import expected_rank_fraction, plan_sample

__all__ = ["StageOption", "best_second_stage", "composite_key", "composite_wrong", "HEAD_GROUP_OFFSET"]

HEAD_GROUP_OFFSET = 2.0
SPLIT_SHARES = tuple(np.round(np.arange(0.1, 0.91, 0.1), 2))  # shares of the scored items sent to the second stage


def composite_key(head_score: np.ndarray, second_score: np.ndarray, split: float) -> np.ndarray:
    """Each item's key in the one certified order (highest first); NaN: not in the order."""
    head_score = np.asarray(head_score, dtype=float)
    return np.where(head_score > split, HEAD_GROUP_OFFSET + head_score, np.asarray(second_score, dtype=float))


def composite_wrong(head_score: np.ndarray, split: float, head_wrong: np.ndarray, second_wrong: np.ndarray) -> np.ndarray:
    """Whether the answer an item gets in the order (its group's model) disagrees with the reference."""
    return np.where(np.asarray(head_score, dtype=float) > split, head_wrong, second_wrong).astype(bool)


@dataclass(frozen=True)
class StageOption:
    second: int  # pool index of the second model
    split: float  # head scores at or below this go to it
    share: float  # of the scored items
    cost: float  # projected: the second pass, the labels and the reference on what is not kept (not the head's pass)
    labels: int
    kept: float
    expected_cost: float  # the same at the expected outcome rather than one deviation worse


def best_second_stage(
    pilot_head: np.ndarray,
    pilot_head_wrong: np.ndarray,
    pilot_second: dict[int, tuple[np.ndarray, np.ndarray]],
    population_head: np.ndarray,
    allowed: int,
    alpha: float,
    second_cost: dict[int, float],
    reference_cost: float,
    max_second_fee: float,
    population: int | None = None,
) -> StageOption | None:
    """The cheapest projected (second model, split) from a pilot that stays out of the certificate.

    ``pilot_second[m]``: model m's scores and wrong flags on the pilot items; ``population_head``: the head's
    scores on the items to be certified (known: the head has answered them). A split is a quantile of those
    scores; an option whose second pass would cost more than ``max_second_fee`` is not considered.
    ``population``: how many items will be certified, when ``population_head`` is only a sample of their
    scores (before the head's pass, the pilot's). For planning only: no certificate rests on it.
    """
    population_head = np.asarray(population_head, dtype=float)
    population_head = population_head[np.isfinite(population_head)]
    population = len(population_head) if population is None else population
    if population == 0 or not len(population_head):
        return None
    splits = np.unique(np.quantile(population_head, SPLIT_SHARES))
    best, best_inputs = None, None
    for m, (score, wrong) in pilot_second.items():
        for split in splits:
            share = float(np.mean(population_head <= split))
            if share <= 0.0 or share * population * second_cost[m] > max_second_fee:
                continue
            key = composite_key(pilot_head, score, split)
            ok = np.isfinite(key) & np.isfinite(pilot_head)
            if ok.sum() < 10:
                continue
            bad = composite_wrong(pilot_head, split, pilot_head_wrong, wrong)
            labels, cost, kept = plan_sample(
                expected_rank_fraction(key[ok]), bad[ok], population, allowed, alpha, 0.0, reference_cost
            )
            fee = share * population * second_cost[m]
            if best is None or cost + fee < best.cost:
                best = StageOption(m, float(split), share, cost + fee, labels, kept, math.nan)
                best_inputs = (key[ok], bad[ok], fee)
    if best is None:
        return None
    key, bad, fee = best_inputs
    _, expected, _ = plan_sample(
        expected_rank_fraction(key), bad, population, allowed, alpha, 0.0, reference_cost, spread=0.0
    )
    return replace(best, expected_cost=expected + fee)
