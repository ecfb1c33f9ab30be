"""The four suites: which settings each runs, with how many trials, and the overhead measurements."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smartmix.bench.data import BenchData, adversarial_rates
from smartmix.bench.peers import PEERS
from smartmix.bench.trials import Cell

__all__ = [
    "SUITES",
    "DEFAULT_TRIALS",
    "QUICK_TRIALS",
    "PAPER_TARGETS",
    "datasets_cells",
    "adversarial_cells",
    "paper_cells",
    "OverheadRow",
    "measure_overheads",
]

SUITES = ("datasets", "adversarial", "paper", "overheads")

# Trials per setting. The full run (all suites, 2 workers) fits in about 20 minutes with these.
DEFAULT_TRIALS = {"datasets": 200, "adversarial": 300, "paper": 10}
QUICK_TRIALS = {"datasets": 8, "adversarial": 30, "paper": 2}

ADVERSARIAL_N = (10_000, 50_000)
QUICK_ADVERSARIAL_N = (10_000,)
ADVERSARIAL_CANDIDATES = (1, 2, 4)
ADVERSARIAL_GAP = 0.005  # "0.5 points below T"

PAPER_TARGETS = tuple(round(0.80 + 0.02 * i, 2) for i in range(10))  # δ_acc = 0.20 ... 0.02
QUICK_PAPER_TARGETS = (0.8, 0.9, 0.98)
OVERHEAD_N = 1_000_000
QUICK_OVERHEAD_N = 100_000


def policy_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """The methods that run on batches without a confidence signal (no peers)."""
    return tuple(m for m in methods if m not in PEERS)


def datasets_cells(
    data: Sequence[BenchData], ns: Sequence[int], targets: Sequence[float], confidence: float,
    methods: Sequence[str], trials: int, peer_trials: int | None = None,
) -> list[Cell]:
    return [
        Cell(
            "datasets", ds.name, n, t, confidence, tuple(methods), trials, ("recorded", ds.name),
            limits=True, peer_trials=peer_trials,
        )
        for ds in data
        for n in ns
        for t in targets
    ]


def adversarial_scenarios(target: float) -> list[tuple[str, float]]:
    return [("at T", target), (f"T-{ADVERSARIAL_GAP * 100:g}pt", round(target - ADVERSARIAL_GAP, 6))]


def adversarial_cells(
    ns: Sequence[int], targets: Sequence[float], confidence: float, methods: Sequence[str], trials: int
) -> list[Cell]:
    cells = []
    for n in ns:
        for t in targets:
            for k in ADVERSARIAL_CANDIDATES:
                for label, rate in adversarial_scenarios(t):
                    rates = adversarial_rates(rate, k)
                    cells.append(
                        Cell(
                            "adversarial", f"{k} cand.", n, t, confidence, policy_methods(methods), trials,
                            ("adversarial", rates), label=label,
                        )
                    )
    return cells


def paper_cells(
    targets: Sequence[float], confidence: float, methods: Sequence[str], trials: int,
    profiles: Sequence[str] | None = None,
) -> list[Cell]:
    from smartmix.backends.simulated import PAPER_PROFILES

    names = list(profiles or PAPER_PROFILES)
    return [
        Cell(
            "paper", name, PAPER_PROFILES[name].n_items, t, confidence, policy_methods(methods), trials,
            ("simulated", name),
        )
        for name in names
        for t in targets
    ]


# ---------------------------------------------------------------------------------------------------
# Overheads


@dataclass
class OverheadRow:
    what: str  # "policy" or "solve_mix"
    name: str  # method, or "<k> models"
    size: int  # items in the batch, or models in the program
    repeats: int
    wall_s: float  # total wall time of one run (policy) or median solve time (solve_mix)
    us_per_item: float  # policy only
    median_ms: float
    p90_ms: float
    max_ms: float
    note: str = ""


def measure_policy_overhead(methods: Sequence[str], n_items: int, target: float, confidence: float) -> list[OverheadRow]:
    """Wall time of simulate() on one simulated IMDB batch of ``n_items`` items, per method."""
    from smartmix.backends.simulated import simulated_arrays
    from smartmix.policies import Guarantee
    from smartmix.simulate import simulate

    arrays = simulated_arrays("imdb", seed=0, n_items=n_items)
    rows = []
    for method in policy_methods(methods):
        start = time.perf_counter()
        outcome = simulate(method, arrays.agree, arrays.cost, arrays.models, Guarantee(target, confidence), seed=0)
        wall = time.perf_counter() - start
        rows.append(
            OverheadRow(
                "policy", method, n_items, 1, wall, 1e6 * wall / n_items, 1000 * wall, 1000 * wall, 1000 * wall,
                note=f"profiled {outcome.plan.certificate.profiled:,} items, savings {outcome.savings:.2f}x",
            )
        )
    return rows


def measure_solve_mix(model_counts: Sequence[int] = (2, 4, 8), repeats: int = 200, seed: int = 0) -> list[OverheadRow]:
    """Solve time of :func:`smartmix.mixing.solve_mix` on random instances (the reference included)."""
    from smartmix.mixing import solve_mix
    from smartmix.stats import assignment_margin

    rng = np.random.default_rng(seed)
    rows = []
    for k in model_counts:
        times = []
        for _ in range(repeats):
            costs = np.append(np.sort(rng.uniform(0.01, 0.5, k - 1)), 1.0)
            lower = np.append(rng.uniform(0.6, 0.99, k - 1), 1.0)
            n_rest = int(rng.integers(1_000, 100_000))
            need = float(rng.uniform(0.7, 0.98)) * n_rest
            margin = assignment_margin(n_rest, 0.01)
            start = time.perf_counter()
            solve_mix(costs, lower, need, n_rest, margin)
            times.append(time.perf_counter() - start)
        t = 1000 * np.asarray(times)
        rows.append(
            OverheadRow(
                "solve_mix", f"{k} models", k, repeats, float(np.median(t)) / 1000, float("nan"),
                float(np.median(t)), float(np.quantile(t, 0.9)), float(t.max()),
                note="random costs, bounds in [0.6, 0.99], 1,000-100,000 remaining items",
            )
        )
    return rows
