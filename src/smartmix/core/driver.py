"""The one driver: a policy's profiling rounds and its plan, executed over any :class:`AnswerSource`.

Two pure steps in a loop. A *profile round* asks the policy for a :class:`ProfileBatch`, has the source
answer it and feeds the agree/cost/score arrays back. *Plan application* answers the remaining items as
the plan says: each item by its assigned model, or, when the plan has a chain, through the chain's stages
from the item's entry stage with the one chain rule (:func:`smartmix.core.chain.keeps`). The outcome —
who answered each item, what each item cost, the certificate with the realised shares — is the same
whether the source spends money (live models, journal first) or reads arrays (validity runs, benchmarks).

The driver is a coroutine; a source that never waits (the offline one) runs it with :func:`run_inline`,
without an event loop.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from smartmix.core.chain import kept, stages
from smartmix.core.source import AnswerSource, Observation
from smartmix.policies.base import Certificate, Plan, Policy, ProfileBatch

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Execution:
    """What running a policy did.

    ``final[i]``: the model (pool index) whose answer is item i's (from profiling where ``plan.profiled[i]``);
    ``failed[i]``: that answer is missing (the call failed); ``spent[i]``: everything paid on item i.
    """

    plan: Plan
    certificate: Certificate
    final: np.ndarray
    failed: np.ndarray
    spent: np.ndarray
    profiling_cost: float
    application_cost: float

    @property
    def cost(self) -> float:
        return self.profiling_cost + self.application_cost


async def execute(policy: Policy, source: AnswerSource) -> Execution:
    """Profile until the policy stops, then apply its plan; every answer comes from ``source``."""
    n_items = policy.spec.n_items
    spent = np.zeros(n_items)
    failed_profile: dict[tuple[int, int], bool] = {}
    profiling_cost = await _profile(policy, source, spent, failed_profile)
    plan = policy.plan()
    source.planned(plan)
    final = np.asarray(plan.assignment, dtype=np.int64).copy()
    failed = np.zeros(n_items, dtype=bool)
    if failed_profile:
        for i in np.flatnonzero(plan.profiled):
            failed[i] = failed_profile.get((int(i), int(final[i])), False)
    application_cost = await apply_plan(plan, policy.spec.reference, source, final, failed, spent)
    certificate = realised(plan.certificate, final, failed, policy.spec.models)
    return Execution(plan, certificate, final, failed, spent, profiling_cost, application_cost)


async def _profile(
    policy: Policy, source: AnswerSource, spent: np.ndarray, failed: dict[tuple[int, int], bool]
) -> float:
    """Profile rounds until the policy stops asking; returns what profiling cost."""
    total = 0.0
    profiled = 0
    while (batch := policy.next_batch()) is not None:
        seen = await profile_round(policy, batch, source)
        spent[batch.items] += seen.cost.sum(axis=1)
        total += float(seen.cost.sum())
        if seen.failed is not None:
            for row, col in zip(*np.nonzero(seen.failed), strict=True):
                failed[(int(batch.items[row]), int(batch.models[col]))] = True
        profiled += len(batch.items)
        source.report("profiling", profiled, None)
    return total


async def profile_round(policy: Policy, batch: ProfileBatch, source: AnswerSource) -> Observation:
    """One profile round: the source answers the batch the policy asked for, and the policy learns from it."""
    seen = await source.profile(batch.items, batch.models)
    policy.observe(batch, seen.agree, seen.cost, seen.score)
    return seen


async def apply_plan(
    plan: Plan, reference: int, source: AnswerSource, final: np.ndarray, failed: np.ndarray, spent: np.ndarray
) -> float:
    """Answer the items profiling did not: by their assigned model, or through the chain. Writes who answered
    into ``final`` (and ``failed``), adds each call's cost to ``spent``; returns what application cost."""
    rest = np.flatnonzero(~np.asarray(plan.profiled, dtype=bool))
    chain = stages(plan.chain, plan.thresholds, reference) if plan.chain else None
    step = source.chunk or max(1, len(rest))
    total = 0.0
    for start in range(0, len(rest), step):
        block = rest[start : start + step]
        if chain is None:
            got = await source.answer(block, final[block])
            spent[block] += got.cost
            total += float(got.cost.sum())
            if got.failed is not None:
                failed[block] = got.failed
        else:
            total += await _apply_chain(plan, chain, block, source, final, failed, spent)
        source.report("application", start + len(block), len(rest))
    return total


async def _apply_chain(
    plan: Plan, chain: list, block: np.ndarray, source: AnswerSource, final: np.ndarray, failed: np.ndarray,
    spent: np.ndarray,
) -> float:
    """Each stage answers the pending items that have entered the chain by then; it keeps what clears its
    threshold. Items entering at stage ``len(chain)`` go straight to the reference."""
    entry = None if plan.entry is None else np.asarray(plan.entry)[block]
    pending = np.ones(len(block), dtype=bool)
    total = 0.0
    for s, stage in enumerate(chain):
        here = np.flatnonzero(pending if entry is None else pending & (entry <= s))
        if not len(here):
            continue
        items = block[here]
        got = await source.answer(items, np.full(len(items), stage.model, dtype=np.int64))
        spent[items] += got.cost
        total += float(got.cost.sum())
        keep = kept(stage, got.score, got.failed)
        final[items[keep]] = stage.model
        if stage.final and got.failed is not None:
            failed[items] = got.failed
        pending[here[keep]] = False
        if not pending.any():
            break
    return total


def realised(certificate: Certificate, final: np.ndarray, failed: np.ndarray, models: tuple[str, ...]) -> Certificate:
    """The certificate with the shares of who really answered; failed items count as not agreeing.

    The policy certified that at least T·n of the planned outputs agree; each item without an answer can
    remove at most one agreeing output, so at least T·n − failed still agree with the same probability.
    The statement then carries the lowered target; ``details`` keeps the one asked for. The policy's own
    (planned or estimated) shares move to ``details["planned_shares"]`` when they differ.
    """
    n = len(final)
    if n == 0:
        return certificate
    counts = np.bincount(final[~failed], minlength=len(models))
    shares = {models[m]: float(counts[m] / n) for m in np.flatnonzero(counts)}
    n_failed = int(failed.sum())
    details = dict(certificate.details)
    if shares != certificate.shares:
        details["planned_shares"] = dict(certificate.shares)
    target = certificate.target
    if n_failed:
        shares["(failed)"] = n_failed / n
        details.update(failed_items=n_failed, requested_target=certificate.target)
        target = max(0.0, certificate.target - n_failed / n)
    return replace(certificate, target=target, shares=shares, details=details)


def run_inline(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits (an offline source) to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("run_inline: the coroutine waited; only sources that never wait can run inline")


__all__ = ["Execution", "apply_plan", "execute", "profile_round", "realised", "run_inline"]
