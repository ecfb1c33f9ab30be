"""The betting confidence sequence for sampling without replacement: exactness checks, coverage at every
look at once (simulation), and a comparison with BARGAIN's published implementation."""

import math

import numpy as np
import pytest

from smartmix.stats import BettingCS, betting_approx_lower, betting_lower, hypergeom_lower


def population(n: int, ones: int) -> np.ndarray:
    x = np.zeros(n)
    x[:ones] = 1.0
    return x


def test_whole_population_drawn_gives_the_exact_count():
    pop = population(200, 173)
    rng = np.random.default_rng(0)
    assert betting_lower(pop[rng.permutation(200)], 200, 0.01, horizon=200) == 173


def test_bound_never_decreases_and_never_below_the_ones_seen():
    rng = np.random.default_rng(1)
    pop = population(1000, 850)[rng.permutation(1000)]
    cs = BettingCS(1000, 0.05, horizon=300)
    last = 0
    for start in range(0, 600, 10):
        cs.update(pop[start : start + 10])
        now = cs.lower_count()
        assert now >= last and now >= pop[: start + 10].sum()
        last = now
    assert last > 0.75 * 1000


def test_capital_is_monotone_in_the_hypothesised_total():
    rng = np.random.default_rng(2)
    cs = BettingCS(500, 0.05, horizon=100)
    cs.update(population(500, 400)[rng.permutation(500)][:120])
    feasible = cs.log_capital[np.isfinite(cs.log_capital)]
    assert np.all(np.diff(feasible) <= 1e-9)


@pytest.mark.parametrize("n_pop, rate, draws", [(300, 0.9, 100), (2000, 0.9, 300), (2000, 0.8, 600), (50_000, 0.9, 2000)])
def test_close_to_the_exact_one_look_bound_when_tuned_to_that_look(n_pop, rate, draws):
    """At the sample size it is tuned for, the sequence costs at most ~2.5 points against the exact
    hypergeometric bound at the same level (which is valid at that one look only)."""
    rng = np.random.default_rng(3)
    pop = population(n_pop, int(rate * n_pop))
    gaps, approx_gaps = [], []
    for _ in range(8):
        x = pop[rng.permutation(n_pop)[:draws]]
        exact = hypergeom_lower(int(x.sum()), draws, n_pop, 0.05)
        cs = betting_lower(x, n_pop, 0.05, horizon=draws)
        gaps.append((exact - cs) / n_pop)
        approx = betting_approx_lower(x.mean(), draws, n_pop, 0.05) * n_pop
        approx_gaps.append((approx - cs) / n_pop)
    assert -0.005 <= np.mean(gaps) < 0.025
    assert abs(np.mean(approx_gaps)) < 0.015  # the planning estimate tracks it on average


def test_bets_tuned_to_a_few_dozen_draws_at_the_start_loosen_the_bound_for_good():
    """Why the policies floor the horizon while rates are noise: the same 3,000 draws give a looser bound, on
    average, when the first 20 bets were tuned to 80 and 380 draws (as a look-ahead on 20 draws may project)
    than when they were tuned to 400; every later bet is the same."""
    rng = np.random.default_rng(7)
    n_pop, draws = 20_000, 3_000
    gains = []
    for _ in range(60):
        x = population(n_pop, int(0.785 * n_pop))[rng.permutation(n_pop)[:draws]]
        bounds = []
        for first in ((80, 380), (400, 400)):
            cs = BettingCS(n_pop, 0.0133, grid=2_000)
            stretches = ((0, 10), (10, 20), (20, 100), (100, draws))
            for (start, end), horizon in zip(stretches, (*first, 1_000, 3_000), strict=True):
                cs.set_horizon(horizon)
                for chunk in range(start, end, 500):
                    cs.update(x[chunk : min(end, chunk + 500)])
            bounds.append(cs.lower_count())
        gains.append(bounds[1] - bounds[0])
    assert np.mean(gains) > 0.0005 * n_pop  # about 0.0013 of the population, 4 standard errors from zero


def test_covers_at_every_look_at_once_with_the_truth_exactly_at_the_bound():
    """1,000 seeds; a miss is any look (every 10 draws, up to the whole batch) whose bound exceeds the true
    count. The truth sits where the bound is most often tested: agreement 0.9."""
    n_pop, ones, alpha, seeds = 300, 270, 0.1, 1000
    pop = population(n_pop, ones)
    misses = 0
    rng = np.random.default_rng(4)
    for _ in range(seeds):
        x = pop[rng.permutation(n_pop)]
        cs = BettingCS(n_pop, alpha, horizon=100)
        missed = False
        for start in range(0, n_pop, 10):
            cs.update(x[start : start + 10])
            missed |= cs.lower_count() > ones
        misses += missed
    assert misses / seeds <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / seeds)


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        BettingCS(10, 0.05).update([0.5, 1.5])
    with pytest.raises(ValueError):
        BettingCS(2, 0.05).update([1, 1, 1])
    with pytest.raises(ValueError):
        BettingCS(10, 1.5)


def test_real_valued_draws_bound_the_mean():
    rng = np.random.default_rng(5)
    pop = rng.beta(8, 2, size=400)
    cs = BettingCS(400, 0.05, horizon=200)
    cs.update(pop[rng.permutation(400)][:200])
    assert 0.6 < cs.lower_mean() <= pop.mean()


def _bargain_lower(x: np.ndarray, n_pop: int, alpha: float) -> float:
    from BARGAIN.bounds.betting_bounds import test_if_true_mean_is_above_m

    grid = np.arange(0.0, 1.0, 0.0025)
    lower = 0.0
    for m in grid:  # BARGAIN tests one target at a time: the bound is the largest m it rejects
        if m <= 0:
            continue
        if not test_if_true_mean_is_above_m(x, m, alpha, fixed_sample_size=False, without_replacement=True, N=n_pop):
            lower = m
        else:
            break
    return lower


def test_tighter_than_bargains_implementation_at_the_same_level():
    pytest.importorskip("BARGAIN")
    rng = np.random.default_rng(6)
    n_pop, draws = 1000, 200
    pop = population(n_pop, 880)
    ours, theirs = [], []
    for _ in range(4):
        x = pop[rng.permutation(n_pop)[:draws]]
        ours.append(betting_lower(x, n_pop, 0.05, horizon=draws) / n_pop)
        theirs.append(_bargain_lower(x, n_pop, 0.05))
    # Same family of test; ours tunes its bets to the look and bounds exact counts.
    assert np.mean(ours) > np.mean(theirs)
    assert np.mean(ours) - np.mean(theirs) < 0.05
