"""``router``: per-item routing by a trained agreement predictor, certified like ``cascade-profiled``.

The predictor's agreement probabilities (``BatchSpec.predicted``) stand in for the confidence scores of
:class:`~smartmix.policies.cascade.Cascade`, and are known before any call: see :class:`Router`.
"""

from __future__ import annotations

import math

import numpy as np

from smartmix.policies.base import Plan, ProfileBatch
from smartmix.policies.cascade import Cascade, ChainCurve


class Router(Cascade):
    """Per-item routing by a trained agreement predictor, with the batch guarantee of ``cascade``.

    The predictor's probability that model m agrees with the reference on item i plays the role of the
    confidence score, but is known *before* calling anything: each remaining item goes straight to the
    cheapest model of the chosen set whose predicted agreement is above the certified threshold (the
    reference if none). The threshold is certified exactly like a cascade's: on profiled items, a wrong
    answer counts when any model of the set would have been chosen at that threshold and disagrees
    (a monotone, conservative count).

    Needs ``spec.predicted``: an array (items × models) of predicted agreement (NaN for the reference).
    """

    name = "router"

    def __init__(self, spec):
        predicted = spec.predicted
        if predicted is None:
            from smartmix.errors import ConfigError

            raise ConfigError(
                "the router method needs a trained predictor: smartmix router train --data train.jsonl "
                "--out router.npz, then pass --router router.npz"
            )
        self.predicted = np.asarray(predicted, dtype=float)
        super().__init__(spec)

    @property
    def needs_scores(self) -> bool:
        return False

    def record_scores(self, batch: ProfileBatch, agree: np.ndarray, score: np.ndarray | None) -> None:
        scores = self.predicted[batch.items]
        columns = np.full((len(batch.items), len(batch.models)), np.nan)
        for j, m in enumerate(batch.models):
            columns[:, j] = scores[:, m]
        super().record_scores(batch, agree, columns)

    def curve_cost(self, c: int, curve: ChainCurve, threshold: float, certification: bool) -> float:
        _, score, cost = self._stack()
        start = self.pilot if certification else 0
        chosen = self.route(self.chains[c], score[start:], threshold)
        rows = np.arange(len(chosen))
        return float(np.nanmean(cost[start:][rows, chosen])) if len(chosen) else math.inf

    def route(self, chain: tuple[int, ...], score: np.ndarray, threshold: float) -> np.ndarray:
        """Per item: the first model of ``chain`` whose score is above ``threshold``, else the reference."""
        chosen = np.full(score.shape[0], self.spec.reference, dtype=np.int64)
        open_ = np.ones(score.shape[0], dtype=bool)
        for m in chain:
            take = open_ & (np.nan_to_num(score[:, m], nan=-np.inf) > threshold)
            chosen[take] = m
            open_ &= ~take
        return chosen

    def plan(self) -> Plan:
        plan = super().plan()
        if plan.chain:
            rest = np.flatnonzero(~plan.profiled)
            plan.assignment[rest] = self.route(plan.chain, self.predicted[rest], plan.thresholds[0])
            plan.certificate.details["routing"] = "cheapest model of the chain with predicted agreement above the threshold"
            plan.chain, plan.thresholds = (), ()
        return plan
