"""Run a policy on known per-item outcomes, without any backend: the fast path for validity and cost studies.

The arrays say, for every item and model, whether the model agrees with the reference and what the call
costs. The policy sees exactly what the engine would show it; the outcome of the plan is then read off
the arrays. Thousands of trials per second make it the instrument for checking the guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartmix.policies import BatchSpec, Certificate, Guarantee, Plan, make_policy


@dataclass(frozen=True)
class TrialOutcome:
    method: str
    realised_agreement: float
    cost: float
    reference_cost: float
    profiling_cost: float
    shares: dict[str, float]
    plan: Plan

    @property
    def savings(self) -> float:
        return self.reference_cost / self.cost if self.cost > 0 else float("inf")

    @property
    def certificate(self) -> Certificate:
        return self.plan.certificate

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
    calibration=None,
) -> TrialOutcome:
    """Run ``method`` on a batch whose per-item outcomes are known.

    ``agree``, ``cost`` and ``score`` (confidence scores in [0, 1], NaN where a model gives none) have one
    row per item and one column per model in ``models`` order (candidates cheapest first, the reference last;
    the reference column of ``agree`` is all True).
    """
    n_items = agree.shape[0]
    if score is None:
        score = np.full(agree.shape, np.nan)
    spec = BatchSpec(
        n_items=n_items, models=models, guarantee=guarantee, seed=seed, batch_size=batch_size, options=options,
        calibration=calibration,
    )
    policy = make_policy(method, spec)
    reference = len(models) - 1
    profiling_cost = 0.0
    while (batch := policy.next_batch()) is not None:
        cols = list(batch.models)
        rows = batch.items
        batch_agree = agree[np.ix_(rows, cols)]
        if reference not in cols:
            batch_agree = np.zeros_like(batch_agree)  # nothing to compare with: the engine reports no agreement
        batch_cost = cost[np.ix_(rows, cols)]
        profiling_cost += float(batch_cost.sum())
        policy.observe(batch, batch_agree, batch_cost, score[np.ix_(rows, cols)])
    plan = policy.plan()
    done = np.flatnonzero(plan.profiled)
    agreeing = int(agree[done, plan.assignment[done]].sum())
    rest = np.flatnonzero(~plan.profiled)
    final = plan.assignment[rest].copy()
    application_cost = 0.0
    if plan.chain:
        pending = np.ones(len(rest), dtype=bool)
        for model, threshold in zip(plan.chain, plan.thresholds, strict=True):
            idx = np.flatnonzero(pending)
            application_cost += float(cost[rest[idx], model].sum())
            keep = score[rest[idx], model] > threshold  # NaN never clears a threshold
            final[idx[keep]] = model
            pending[idx[keep]] = False
        final[pending] = reference
        application_cost += float(cost[rest[pending], reference].sum())
    else:
        application_cost = float(cost[rest, final].sum())
    agreeing += int(agree[rest, final].sum())
    counts = np.bincount(np.concatenate([plan.assignment[done], final]), minlength=len(models))
    return TrialOutcome(
        method=method,
        realised_agreement=agreeing / n_items,
        cost=profiling_cost + application_cost,
        reference_cost=float(cost[:, reference].sum()),
        profiling_cost=profiling_cost,
        shares={models[m]: counts[m] / n_items for m in np.flatnonzero(counts)},
        plan=plan,
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
