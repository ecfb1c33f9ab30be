"""The baseline: the reference model answers every item."""

from __future__ import annotations

import numpy as np

from smartmix.policies.base import Certificate, Plan, Policy, ProfileBatch


class ReferenceOnly(Policy):
    """Every item goes to the reference: agreement is 1 by definition, cost is the maximum."""

    name = "reference"

    def next_batch(self) -> ProfileBatch | None:
        return None

    def observe(self, batch, agree, cost, score=None) -> None:  # pragma: no cover
        raise RuntimeError("the reference-only policy profiles nothing")

    def plan(self) -> Plan:
        spec = self.spec
        certificate = Certificate(
            method=self.name,
            target=spec.guarantee.target,
            confidence=spec.guarantee.confidence,
            valid=True,
            n_items=spec.n_items,
            profiled=0,
            shares={spec.models[spec.reference]: 1.0},
            details={"note": "every output is the reference's own, so agreement is 1 with certainty"},
        )
        return Plan(
            np.full(spec.n_items, spec.reference, dtype=np.int64), np.zeros(spec.n_items, dtype=bool), certificate
        )
