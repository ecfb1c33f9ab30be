import math

import numpy as np
import pytest
from scipy import stats

from smartmix.stats import (
    DeltaBudget,
    LookSchedule,
    approx_lower,
    auroc,
    binomial_lower,
    binomial_upper,
    clopper_pearson,
    hypergeom_lower,
    hypergeom_upper,
    rest_lower_bound,
    split_lower,
    wilson_lower,
)


def brute_lower(s: int, n: int, N: int, alpha: float) -> int:
    if s == 0:
        return 0
    for k in range(s, N - (n - s) + 1):
        if stats.hypergeom.sf(s - 1, N, k, n) > alpha:
            return k
    raise AssertionError


def test_hypergeom_lower_matches_brute_force_on_small_populations():
    rng = np.random.default_rng(0)
    for _ in range(400):
        N = int(rng.integers(1, 80))
        n = int(rng.integers(1, N + 1))
        s = int(rng.integers(0, n + 1))
        alpha = float(rng.choice([0.5, 0.1, 0.05, 0.001]))
        assert hypergeom_lower(s, n, N, alpha) == brute_lower(s, n, N, alpha)


def test_hypergeom_lower_is_exact_at_its_edge_for_large_populations():
    for s, n, N, alpha in [(3100, 4000, 50000, 0.0008), (95, 100, 1000, 0.01), (9990, 10000, 1_000_000, 0.001)]:
        k = hypergeom_lower(s, n, N, alpha)
        assert stats.hypergeom.sf(s - 1, N, k, n) > alpha
        assert stats.hypergeom.sf(s - 1, N, k - 1, n) <= alpha


def test_hypergeom_upper_mirrors_lower():
    assert hypergeom_upper(30, 40, 200, 0.05) == 200 - hypergeom_lower(10, 40, 200, 0.05)


def test_whole_population_sampled_gives_the_exact_count():
    assert hypergeom_lower(37, 50, 50, 1e-6) == 37


def test_hypergeom_bound_covers_at_the_nominal_rate():
    """Simulate sampling without replacement: the bound may exceed the truth at most alpha of the time."""
    rng = np.random.default_rng(1)
    N, K, n, alpha = 2000, 1700, 200, 0.05
    population = np.zeros(N, bool)
    population[:K] = True
    misses = 0
    trials = 3000
    for _ in range(trials):
        s = int(population[rng.choice(N, n, replace=False)].sum())
        misses += hypergeom_lower(s, n, N, alpha) > K
    assert misses / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert misses > 0  # the bound is not trivially loose either


def test_binomial_lower_and_clopper_pearson_match_scipy():
    assert binomial_lower(80, 100, 0.025) == pytest.approx(stats.beta.ppf(0.025, 80, 21))
    assert binomial_upper(20, 100, 0.025) == pytest.approx(stats.beta.ppf(0.975, 21, 80))
    counts = np.array([0, 5, 50, 100])
    assert np.allclose(binomial_lower(counts, 100, 0.05), np.where(counts == 0, 0, stats.beta.ppf(0.05, counts, 101 - counts)))
    assert np.allclose(binomial_upper(counts, 100, 0.05), np.where(counts == 100, 1, stats.beta.ppf(0.95, counts + 1, 100 - counts)))
    lo, hi = clopper_pearson(80, 100, 0.95)
    ci = stats.binomtest(80, 100).proportion_ci(0.95, method="exact")
    assert lo == pytest.approx(ci.low) and hi == pytest.approx(ci.high)
    assert clopper_pearson(0, 10, 0.95)[0] == 0.0
    assert math.isnan(clopper_pearson(10, 10, 0.95)[1])  # published behaviour kept for the paper method


def test_wilson_lower_matches_statsmodels_formula():
    # Wilson 95%: 50/100 -> 0.4038
    assert wilson_lower(50, 100) == pytest.approx(0.40383, abs=1e-4)
    assert wilson_lower(0, 0) == 0.0


def test_approx_lower_is_close_to_exact():
    exact = hypergeom_lower(3100, 4000, 50000, 0.001) / 50000
    assert approx_lower(3100 / 4000, 4000, 50000, 0.001) == pytest.approx(exact, abs=5e-4)


def test_look_schedule_is_geometric_and_ends_at_the_batch():
    sizes = LookSchedule(50_000).sizes
    assert sizes[0] == 100 and sizes[-1] == 50_000
    assert all(b > a for a, b in zip(sizes, sizes[1:], strict=False))
    assert all(s % 10 == 0 for s in sizes)
    assert 14 <= len(sizes) <= 18
    assert LookSchedule(55).sizes == (55,)
    every = LookSchedule(50, first=10, ratio=1.0).sizes
    assert every == (10, 20, 30, 40, 50)
    assert LookSchedule(1000).next_size(100) == 150


def test_delta_budget_spends_at_most_delta():
    budget = DeltaBudget(0.05, n_models=3, n_looks=16, assignment=0.01)
    assert budget.per_look * 3 * 16 + budget.assignment == pytest.approx(0.05)
    with pytest.raises(ValueError):
        DeltaBudget(0.05, 1, 1, assignment=0.05)


@pytest.mark.parametrize("agreeing,population,drawn,alpha", [(800, 1000, 900, 0.01), (50, 200, 30, 0.05), (5, 10, 5, 0.2)])
def test_split_lower_is_the_exact_hypergeometric_quantile(agreeing, population, drawn, alpha):
    q = split_lower(agreeing, population, drawn, alpha)
    dist = stats.hypergeom(population, agreeing, drawn)
    assert dist.cdf(q - 1) <= alpha < dist.cdf(q)  # P(X < q) <= alpha, and q is the largest such value


def test_split_lower_holds_in_simulation_and_grows_with_the_count():
    rng = np.random.default_rng(0)
    population, agreeing, drawn, alpha = 2_000, 1_500, 1_600, 0.05
    q = split_lower(agreeing, population, drawn, alpha)
    items = np.zeros(population, dtype=bool)
    items[:agreeing] = True
    got = np.array([items[rng.permutation(population)[:drawn]].sum() for _ in range(4_000)])
    assert (got < q).mean() <= alpha + 0.01
    assert split_lower(agreeing - 100, population, drawn, alpha) < q  # a lower count bound is conservative
    assert split_lower(agreeing, population, population, alpha) == agreeing  # everything drawn: no chance
    assert split_lower(0, population, drawn, alpha) == 0


def test_rest_lower_bound_subtracts_what_was_seen():
    k = hypergeom_lower(90, 100, 1000, 0.01)
    assert rest_lower_bound(90, 100, 100, 1000, 0.01) == pytest.approx((k - 90) / 900)
    # items profiled by the reference but not by this model are counted against it
    assert rest_lower_bound(90, 100, 150, 1000, 0.01) == pytest.approx((k - 90 - 50) / 850)


def test_auroc_counts_ties_half_and_skips_unknown_scores():
    assert auroc([1, 0, 1, 0], [0.9, 0.1, 0.5, 0.5]) == pytest.approx(3.5 / 4)
    assert auroc([1, 0, 0, 1], [0.9, np.nan, 0.5, 0.3]) == pytest.approx(0.5)  # the NaN item is left out
    assert math.isnan(auroc([1, 1], [0.1, 0.2]))
