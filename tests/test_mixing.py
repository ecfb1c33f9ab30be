import numpy as np
import pytest
from scipy.optimize import linprog

from smartmix.mixing import mix_fractions, mix_unit_cost, solve_mix


def lp_reference(costs, lower, need):
    res = linprog(costs, A_ub=-lower.reshape(1, -1), b_ub=[-need], A_eq=np.ones((1, len(costs))), b_eq=[1], bounds=(0, 1))
    return res.fun if res.status == 0 else np.inf


def test_closed_form_relaxation_matches_linprog():
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(2, 8))
        costs = np.sort(rng.uniform(0.1, 10, m))
        lower = rng.uniform(0.3, 0.99, m)
        lower[-1] = 1.0
        need = float(rng.uniform(0.5, 0.99))
        cost, x = mix_fractions(costs, lower, need, 0.0)
        assert cost == pytest.approx(lp_reference(costs, lower, need), rel=1e-7, abs=1e-9)
        assert x.sum() == pytest.approx(1.0)
        assert lower @ x >= need - 1e-9


def test_margin_applies_to_mixes_only():
    costs = np.array([1.0, 10.0])
    lower = np.array([0.9, 1.0])
    assert mix_unit_cost(costs, lower, 0.9, 0.05) == 1.0  # the cheap model alone meets the need
    assert mix_unit_cost(costs, lower, 0.95, 0.0) == pytest.approx(5.5)
    assert mix_unit_cost(costs, lower, 0.95, 0.01) == pytest.approx(1 + 0.6 * 9)


def test_solve_mix_integer_counts_meet_need_plus_margin():
    costs = np.array([1.0, 3.0, 10.0])
    lower = np.array([0.80, 0.88, 1.0])
    sol = solve_mix(costs, lower, need=900.0, n_rest=1000, margin=12.0)
    assert sol.feasible and sol.counts.sum() == 1000
    assert lower @ sol.counts >= 912 - 1e-6
    relaxed = mix_unit_cost(costs, lower, 0.9, 0.012) * 1000
    assert relaxed - 1e-6 <= sol.cost <= relaxed + 10  # integrality costs at most about one item


def test_solve_mix_prefers_single_model_without_margin():
    sol = solve_mix(np.array([1.0, 10.0]), np.array([0.95, 1.0]), need=940.0, n_rest=1000, margin=30.0)
    assert list(sol.counts) == [1000, 0] and sol.margin == 0.0


def test_solve_mix_falls_back_to_reference():
    sol = solve_mix(np.array([1.0, 10.0]), np.array([0.2, 1.0]), need=990.0, n_rest=1000, margin=5.0)
    assert sol.counts[-1] >= 990
