"""A small version of the validity benchmark: the hard case, true agreement exactly at the target.

The full study (1,000 trials per setting, every shared set) is `smartmix bench --suite adversarial`.
Here: 200 trials per method on a 5,000-item pool whose cheap model agrees exactly at T. A valid method
must meet T in at least 95% of trials; with 200 trials we require the Wilson upper limit to reach 0.95,
i.e. an observed rate that is not significantly below it. The published SMART statistics (`paper`)
are run beside as a check that the test can fail.
"""

import numpy as np
import pytest

from smartmix.core.offline import simulate, synthetic_pool
from smartmix.policies import Guarantee

TRIALS = 200


def hit_rate(method: str, target: float, rates: list[float], costs: list[float], n: int = 5_000) -> float:
    hits = 0
    for seed in range(TRIALS):
        agree, cost, models = synthetic_pool(n, rates, costs, seed=seed)
        out = simulate(method, agree, cost, models, Guarantee(target, 0.95), seed=10_000 + seed)
        hits += out.hit(target)
    return hits / TRIALS


@pytest.mark.parametrize("method", ["exhaustive", "efficient", "mix"])
def test_valid_methods_hold_at_the_edge(method):
    rate = hit_rate(method, 0.9, [0.9, 0.895], [1, 2, 10])
    assert rate >= 0.95 - 1.96 * np.sqrt(0.95 * 0.05 / TRIALS), rate


def test_paper_method_misses_more_often_below_the_target():
    """Half a point below T, the published statistics declare the model good too often."""
    valid = hit_rate("efficient", 0.9, [0.895], [1, 10], n=5_000)
    paper = hit_rate("paper", 0.9, [0.895], [1, 10], n=5_000)
    assert paper < valid
