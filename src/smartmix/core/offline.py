"""The offline answer source: per-item outcomes known in advance, as arrays — and :func:`simulate` on it.

The arrays say, for every item and model, whether the model agrees with the reference, what the call costs
and the model's score. :class:`OfflineSource` answers the driver from them by indexing, so a run is the same
driver (:func:`smartmix.core.driver.execute`) that spends money on live models, at thousands of trials per
second: the instrument for checking the guarantee and for the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartmix.core.driver import Execution, execute, run_inline
from smartmix.core.source import Answers, Observation
from smartmix.policies import BatchSpec, Certificate, Guarantee, Plan, make_policy


class OfflineSource:
    """Answers from arrays (items x models, candidates cheapest first, the reference last): ``agree`` with
    the reference, ``cost`` per call, ``score`` in [0, 1] (NaN where none). Nothing fails; nothing waits.
    A pair profiled twice is paid once, as the live engine sends an identical request once per run."""

    chunk = None

    def __init__(self, agree: np.ndarray, cost: np.ndarray, score: np.ndarray | None = None):
        if cost.shape != agree.shape or (score is not None and score.shape != agree.shape):
            raise ValueError(f"agree, cost and score must have one shape, got {agree.shape}, {cost.shape}, "
                             f"{None if score is None else score.shape}")
        self.agree = agree
        self.cost = cost
        self.score = np.full(agree.shape, np.nan) if score is None else score
        self.reference = agree.shape[1] - 1
        # per item, a bit per model profiled on it: a pair asked again is not paid again
        self.called = np.zeros(agree.shape[0], dtype=object if agree.shape[1] > 62 else np.int64)
        self._bits: dict[tuple[int, ...], int] = {}

    async def profile(self, items: np.ndarray, models: tuple[int, ...]) -> Observation:
        cols = list(models)
        rows = np.ix_(items, cols)
        agree = self.agree[rows]
        if self.reference not in cols:
            agree = np.zeros_like(agree)  # nothing to compare with: no agreement is seen
        cost = self.cost[rows]
        called = self.called[items]
        bits = self._bits.get(models)
        if bits is None:
            bits = self._bits[models] = sum(1 << m for m in cols)
        if (called & bits).any():  # the live engine shares an answer it already has in this run, at no cost
            again = (called[:, None] >> np.array(cols)) & 1 == 1
            cost = np.where(again, 0.0, cost)
        self.called[items] = called | bits
        return Observation(agree, cost, self.score[rows])

    async def answer(self, items: np.ndarray, models: np.ndarray) -> Answers:
        return Answers(self.cost[items, models], self.score[items, models])

    def planned(self, plan: Plan) -> None:
        return None

    def report(self, phase: str, done: int, total: int | None) -> None:
        return None

    def agreeing(self, execution: Execution) -> int:
        """How many final answers agree with the reference."""
        rows = np.flatnonzero(~execution.failed)
        return int(self.agree[rows, execution.final[rows]].sum())


@dataclass(frozen=True)
class TrialOutcome:
    method: str
    realised_agreement: float
    cost: float
    reference_cost: float
    profiling_cost: float
    shares: dict[str, float]  # who really answered, as a fraction of all items
    plan: Plan
    certificate: Certificate  # the plan's certificate with the realised shares

    @property
    def savings(self) -> float:
        return self.reference_cost / self.cost if self.cost > 0 else float("inf")

    def hit(self, target: float) -> bool:
        return self.realised_agreement >= target - 1e-12


def simulate(
    method: str,
    agree: np.ndarray,
    cost: np.ndarray,
    models: tuple[str, ...],
    guarantee: Guarantee,
    seed: int = 0,
    batch_size: int = 10,
    score: np.ndarray | None = None,
    options: tuple = (),
    predicted: np.ndarray | None = None,
) -> TrialOutcome:
    """Run ``method`` on a batch whose per-item outcomes are known, through the driver on an :class:`OfflineSource`.

    ``agree``, ``cost`` and ``score`` (scores in [0, 1], NaN where a model gives none) have one row per item
    and one column per model in ``models`` order (candidates cheapest first, the reference last; the
    reference column of ``agree`` is all True). ``predicted``: the router's predicted agreement (items x models).
    """
    spec = BatchSpec(
        n_items=agree.shape[0], models=models, guarantee=guarantee, seed=seed, batch_size=batch_size,
        options=options, predicted=predicted,
    )
    source = OfflineSource(agree, cost, score)
    execution = run_inline(execute(make_policy(method, spec), source))
    n_items = max(1, spec.n_items)
    return TrialOutcome(
        method=method,
        realised_agreement=source.agreeing(execution) / n_items,
        cost=execution.cost,
        reference_cost=float(cost[:, -1].sum()),
        profiling_cost=execution.profiling_cost,
        shares=dict(execution.certificate.shares),
        plan=execution.plan,
        certificate=execution.certificate,
    )


def synthetic_scores(agree: np.ndarray, separation: float, seed: int = 0) -> np.ndarray:
    """Confidence scores in (0, 1) that are informative about agreement: sigmoid(separation·(±1) + noise).

    ``separation`` 0 gives scores unrelated to agreement; larger values rank agreeing items higher.
    """
    rng = np.random.default_rng(seed)
    logits = separation * np.where(agree, 1.0, -1.0) + rng.standard_normal(agree.shape)
    return 1.0 / (1.0 + np.exp(-logits))


def synthetic_pool(
    n_items: int, rates: list[float], costs: list[float], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A batch whose cheaper models agree with the reference on exactly round(rate * n) items each, placed at
    random; constant cost per call. ``costs`` lists the candidates' costs then the reference's.

    Returns (agree, cost, model names) ready for :func:`simulate`. This is the adversarial case for the
    guarantee: put a rate exactly at the target, or just below it.
    """
    rng = np.random.default_rng(seed)
    cols = []
    for rate in rates:
        col = np.zeros(n_items, dtype=bool)
        col[rng.choice(n_items, int(round(rate * n_items)), replace=False)] = True
        cols.append(col)
    cols.append(np.ones(n_items, dtype=bool))
    agree = np.stack(cols, axis=1)
    cost = np.tile(np.asarray(costs, dtype=float), (n_items, 1))
    models = tuple(f"m{i}" for i in range(len(rates))) + ("ref",)
    return agree, cost, models


__all__ = ["OfflineSource", "TrialOutcome", "simulate", "synthetic_pool", "synthetic_scores"]
