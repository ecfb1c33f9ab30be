"""Calibration carried across batches: past outputs of the same models on the same task choose the plan shape.

A :class:`Calibration` holds, for earlier items, whether each model agreed with the reference, what each call
cost and each model's confidence score. Policies read it from ``BatchSpec.calibration`` to choose the plan
*shape* before the batch is touched — which model(s) to certify and how many items to profile — so the batch
itself certifies one pre-chosen shape at the full δ: no look budget, no split over shapes.

The choice must not depend on the current batch: :func:`choose_shape` reads only the calibration arrays,
the batch size, the target and δ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smartmix.errors import ConfigError, DataError

if TYPE_CHECKING:
    from smartmix.policies.smart import CalibratedShape, Profiler

__all__ = ["Calibration", "load_calibration", "choose_shape"]


@dataclass(frozen=True, eq=False)
class Calibration:
    """Past per-item outcomes; columns in pool order (candidates cheapest first, the reference last)."""

    models: tuple[str, ...]
    agree: np.ndarray  # (n_past, n_models) bool: agreement with the reference on past items
    cost: np.ndarray  # (n_past, n_models) float: USD per call
    score: np.ndarray  # (n_past, n_models) float score in [0, 1], NaN where none
    source: str

    @property
    def n_items(self) -> int:
        return int(self.agree.shape[0])

    def column(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise ConfigError(f"the calibration data {self.source} have no outputs of model '{model}'") from None


def load_calibration(path: str | Path, models, comparator: Any = None) -> Calibration:
    """Past outputs for ``models`` (reference last) from a recorded-outputs JSONL file (the replay layout).

    Agreement is computed with ``comparator`` (exact match after normalisation by default); scores are
    ``exp`` of the recorded log-probability confidence.
    """
    from smartmix.backends.replay import RecordedOutputs

    path = Path(path)
    if not path.exists():
        raise DataError(f"--calibration {path}: no such file")
    models = tuple(models)
    if len(models) < 2:
        raise ConfigError("calibration needs at least one candidate model and the reference")
    if comparator is None:
        comparator = _default_comparator()
    recorded = RecordedOutputs.load(path)
    arrays = recorded.arrays(models, models[-1], comparator)
    if arrays.n_items == 0:
        raise DataError(f"--calibration {path}: no items")
    with np.errstate(over="ignore"):
        score = np.exp(np.minimum(arrays.confidence, 0.0))
    return Calibration(models, arrays.agree.astype(bool), arrays.cost.astype(float), score, str(path))


def _default_comparator():
    try:
        from smartmix.comparators import make_comparator  # type: ignore[import-not-found]

        return make_comparator("exact")
    except ImportError:
        from smartmix.tasks import ExactComparator

        return ExactComparator()


def _sample_sizes(population: int) -> list[int]:
    sizes, size = [], 20.0
    while size < population * 0.8:
        sizes.append(int(size))
        size *= 1.2
    return sizes


def choose_shape(policy: Profiler, calibration: Calibration) -> CalibratedShape | None:
    """The cheapest plan shape for this batch by the past data: (models to certify, sample size).

    For each single candidate (and, for the mix, each pair) and each sample size n, the expected bill is
    priced over the spread of agreeing counts the batch's sample may show (binomial at the past rate):
    profiling n items with the shape's models and the reference, then the plan the exact bound at the
    shape's α would allow. Shapes whose candidate calls on the sample would cost more than the profiling
    allowance of the reference-only bill are not considered, so a failed certification wastes at most that.
    Returns None when no shape is expected to beat reference-only.
    """
    from scipy import stats

    from smartmix.mixing import mix_unit_cost
    from smartmix.policies.smart import CalibratedShape
    from smartmix.stats import hypergeom_lower, split_margin_estimate

    spec = policy.spec
    cols = [calibration.column(m) for m in spec.models]
    agree = calibration.agree[:, cols]
    cost = calibration.cost[:, cols]
    rates = agree.mean(axis=0)
    unit = np.nanmean(cost, axis=0)
    reference = spec.reference
    c_ref = float(unit[reference])
    n_items = spec.n_items
    required = spec.guarantee.required_agreeing(n_items)
    delta_models = spec.guarantee.delta - policy.budget.assignment
    mixing = policy.name == "mix"
    cap = policy.profiling_allowance * n_items * c_ref
    shapes: list[tuple[int, ...]] = [(m,) for m in spec.candidates if unit[m] < c_ref]
    if mixing:
        shapes += [(a, b) for a in spec.candidates for b in spec.candidates if a < b and unit[a] < c_ref and unit[b] < c_ref]
    quantiles = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    best: tuple[float, tuple[int, ...], int] = (n_items * c_ref, (), 0)
    for shape in shapes:
        alpha = delta_models / len(shape)
        per_item = c_ref + float(sum(unit[m] for m in shape))
        for n in _sample_sizes(n_items):
            if n * (per_item - c_ref) > cap:
                break
            rest = n_items - n
            need = required - n
            if rest <= 0 or need <= 0:
                continue
            outcomes = []
            for q in quantiles:
                lower = np.zeros(len(spec.models))
                lower[reference] = 1.0
                for m in shape:
                    s = int(stats.binom.ppf(q, n, rates[m]))
                    k_low = hypergeom_lower(min(s, n), n, n_items, alpha)
                    lower[m] = max(k_low - s, 0) / rest
                need_frac = need / rest
                if mixing:
                    margin = split_margin_estimate(rest, policy.budget.assignment) / rest
                    costs = np.where(np.isin(np.arange(len(unit)), (*shape, reference)), unit, 1e9)
                    plan = mix_unit_cost(costs, lower, need_frac, margin)
                else:
                    ok = [m for m in shape if lower[m] >= need_frac]
                    plan = min([unit[m] for m in ok], default=c_ref)
                outcomes.append(min(plan, c_ref))
            total = n * per_item + rest * float(np.mean(outcomes))
            if total < best[0]:
                best = (total, shape, n)
    total, shape, n = best
    if not shape or not math.isfinite(total):
        return None
    return CalibratedShape(tuple(shape), int(n), total / n_items, c_ref)
