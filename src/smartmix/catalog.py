"""The methods by name, with whether each carries a guarantee and a one-line description.

Static, so that ``smartmix methods`` and ``--help`` need not import the policies (numpy, scipy). A test
keeps it equal to the policy registry (``smartmix.policies.Policy.registry``): the same names, the same
guarantee flags, and each description the first paragraph of its class's docstring.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["METHOD_CATALOG", "MethodInfo"]


class MethodInfo(NamedTuple):
    name: str
    guaranteed: bool
    description: str


METHOD_CATALOG: tuple[MethodInfo, ...] = (
    MethodInfo(
        "cascade",
        True,
        "Guaranteed cascade: the cheap model answers every item, and its most confident ones are kept as far as "
        "a certified prefix of its scores allows.",
    ),
    MethodInfo(
        "cascade-profiled",
        True,
        "Guaranteed cascade over a chain of cheaper models ending at the reference, profiled item by item.",
    ),
    MethodInfo(
        "efficient",
        True,
        "Stop profiling once more of it is not expected to pay for itself; apply the cheapest certified model.",
    ),
    MethodInfo(
        "exhaustive",
        True,
        "SMART's profiling rule with valid bounds: profile until the cheapest model not ruled out is certified.",
    ),
    MethodInfo(
        "margin",
        False,
        "Two-tier margin sampling as published: no guarantee; escalation share set by a per-item budget.",
    ),
    MethodInfo(
        "mix",
        True,
        "SMART-ModelMix made valid: the rest is split among models by the model-mix program.",
    ),
    MethodInfo(
        "paper",
        False,
        "SMART's statistics exactly as the reference code publishes them: no valid guarantee (a baseline).",
    ),
    MethodInfo(
        "reference",
        True,
        "Every item goes to the reference: agreement is 1 by definition, cost is the maximum.",
    ),
    MethodInfo(
        "router",
        True,
        "Per-item routing by a trained agreement predictor, with the batch guarantee of ``cascade``.",
    ),
)
