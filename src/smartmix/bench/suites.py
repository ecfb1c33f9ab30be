"""The four suites: which settings each runs, with how many trials, and the overhead measurements."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

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
    "measure_policy_overhead",
    "measure_solve_mix",
    "trial_plan",
]

SUITES = ("datasets", "adversarial", "paper", "overheads")

# Trials per setting. The full run (all suites, 2 workers) fits in about 20 minutes with these; ``--trials``
# sets one count for every suite and method instead. ``paper`` is the slow method on adversarial pools
# (it checks its interval every 10 items and, with agreement right at T, profiles long), so it gets fewer.
DEFAULT_TRIALS = {"datasets": 100, "adversarial": 200, "adversarial-large": 40, "paper": 10}
QUICK_TRIALS = {"datasets": 8, "adversarial": 15, "adversarial-large": 6, "paper": 2}
SLOW_METHOD_TRIALS = {"adversarial": (("paper", 100),), "adversarial-large": (("paper", 20),)}
QUICK_SLOW_METHOD_TRIALS = {"adversarial": (("paper", 8),), "adversarial-large": (("paper", 3),)}
LARGE_N = 20_000  # adversarial pools above this size use the "adversarial-large" counts


def trial_plan(key: str, quick: bool, override: int | None) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(trials per setting, per-method caps) for a suite key; ``override`` (--trials) sets one count."""
    if override is not None:
        return override, ()
    counts = QUICK_TRIALS if quick else DEFAULT_TRIALS
    caps = QUICK_SLOW_METHOD_TRIALS if quick else SLOW_METHOD_TRIALS
    return counts[key], caps.get(key, ())

ADVERSARIAL_N = (10_000, 50_000)
QUICK_ADVERSARIAL_N = (10_000,)
ADVERSARIAL_CANDIDATES = (1, 2, 4)
QUICK_ADVERSARIAL_CANDIDATES = (1, 4)
ADVERSARIAL_GAP = 0.005  # "0.5 points below T"

PAPER_TARGETS = tuple(round(0.80 + 0.02 * i, 2) for i in range(10))  # δ_acc = 0.20 ... 0.02
QUICK_PAPER_TARGETS = (0.8, 0.9, 0.98)
OVERHEAD_N = 1_000_000
QUICK_OVERHEAD_N = 100_000
SLOW_OVERHEAD_S = 20.0  # a method slower than this on one target is not timed on the other targets


@cache
def _toy_policy(method: str):
    """The policy built on a toy batch with no options, or the error that says why it can't be."""
    from smartmix.policies import BatchSpec, Guarantee, make_policy

    try:
        return make_policy(method, BatchSpec(n_items=100, models=("a", "b"), guarantee=Guarantee(0.9)))
    except Exception as exc:  # e.g. the router: it needs a trained predictor passed as an option
        return exc


def unavailable(method: str) -> str | None:
    """Why a registered policy can't run in the bench (it needs options the bench can't supply), or None."""
    if method in PEERS:
        return None
    policy = _toy_policy(method)
    return str(policy) if isinstance(policy, Exception) else None


def needs_scores(method: str) -> bool:
    """Whether a method needs per-item confidence scores (peers do; policies say so themselves)."""
    if method in PEERS:
        return True
    policy = _toy_policy(method)
    return False if isinstance(policy, Exception) else bool(policy.needs_scores)


def policy_methods(methods: Sequence[str], scores: bool = False) -> tuple[str, ...]:
    """The methods that run on batches with (``scores``) or without a confidence signal."""
    return tuple(m for m in methods if scores or not needs_scores(m))


def datasets_cells(
    data: Sequence[BenchData], ns: Sequence[int], targets: Sequence[float], confidence: float,
    methods: Sequence[str], quick: bool = False, trials: int | None = None,
) -> list[Cell]:
    count, caps = trial_plan("datasets", quick, trials)
    return [
        Cell(
            "datasets", ds.name, n, t, confidence, tuple(methods), count, ("recorded", ds.name),
            limits=True, method_trials=caps,
        )
        for ds in data
        for n in ns
        for t in targets
    ]


def adversarial_scenarios(target: float) -> list[tuple[str, float]]:
    return [("at T", target), (f"T-{ADVERSARIAL_GAP * 100:g}pt", round(target - ADVERSARIAL_GAP, 6))]


def adversarial_cells(
    ns: Sequence[int], targets: Sequence[float], confidence: float, methods: Sequence[str],
    quick: bool = False, trials: int | None = None,
) -> list[Cell]:
    cells = []
    for n in ns:
        count, caps = trial_plan("adversarial-large" if n > LARGE_N else "adversarial", quick, trials)
        for t in targets:
            for k in QUICK_ADVERSARIAL_CANDIDATES if quick else ADVERSARIAL_CANDIDATES:
                for label, rate in adversarial_scenarios(t):
                    rates = adversarial_rates(rate, k)
                    cells.append(
                        Cell(
                            "adversarial", f"{k} cand.", n, t, confidence, tuple(methods), count,
                            ("adversarial", rates), label=label, method_trials=caps,
                        )
                    )
    return cells


def paper_cells(
    targets: Sequence[float], confidence: float, methods: Sequence[str], quick: bool = False,
    trials: int | None = None, profiles: Sequence[str] | None = None,
) -> list[Cell]:
    from smartmix.backends.simulated import PAPER_PROFILES

    count, caps = trial_plan("paper", quick, trials)
    names = list(profiles or PAPER_PROFILES)
    return [
        Cell(
            "paper", name, PAPER_PROFILES[name].n_items, t, confidence, policy_methods(methods), count,
            ("simulated", name), method_trials=caps,
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
    setting: str  # e.g. "T=0.9, imdb"
    size: int  # items in the batch, or models in the program
    repeats: int
    wall_s: float  # total wall time of one run (policy) or median solve time (solve_mix)
    us_per_item: float  # policy only
    median_ms: float
    p90_ms: float
    max_ms: float
    note: str = ""


def measure_policy_overhead(
    methods: Sequence[str], n_items: int, targets: Sequence[float], confidence: float
) -> list[OverheadRow]:
    """Wall time of simulate() on one simulated IMDB batch of ``n_items`` items, per method and target.

    The batch gets synthetic confidence scores so that score-based policies run too.
    """
    from smartmix.bench.data import simulated_batch, synthetic_scores
    from smartmix.bench.trials import simulate_extra
    from smartmix.core.offline import simulate
    from smartmix.policies import Guarantee

    arrays = simulated_batch("imdb", seed=0, n_items=n_items)
    score = synthetic_scores(arrays.agree, np.random.default_rng(0))
    score[:, -1] = np.nan
    arrays = type(arrays)(arrays.models, arrays.agree, arrays.cost, score)
    extra = simulate_extra(arrays)
    rows = []
    slow: set[str] = set()
    for target in targets:
        for method in [m for m in methods if m not in PEERS]:
            if method in slow:
                continue
            start = time.perf_counter()
            outcome = simulate(
                method, arrays.agree, arrays.cost, arrays.models, Guarantee(target, confidence), seed=0, **extra
            )
            wall = time.perf_counter() - start
            rows.append(
                OverheadRow(
                    "policy", method, f"T={target:g}, simulated imdb + synthetic scores", n_items, 1, wall, 1e6 * wall / n_items,
                    1000 * wall, 1000 * wall, 1000 * wall,
                    note=f"profiled {outcome.plan.certificate.profiled:,} items, savings {outcome.savings:.2f}x",
                )
            )
            if wall > SLOW_OVERHEAD_S:
                slow.add(method)  # measured once: its other targets are skipped to keep the run short
    return rows


def measure_solve_mix(model_counts: Sequence[int] = (2, 4, 8), repeats: int = 200, seed: int = 0) -> list[OverheadRow]:
    """Solve time of :func:`smartmix.mixing.solve_mix` on random instances (the reference included)."""
    from smartmix.mixing import solve_mix
    from smartmix.stats import split_margin_estimate

    rng = np.random.default_rng(seed)
    rows = []
    for k in model_counts:
        times = []
        for _ in range(repeats):
            costs = np.append(np.sort(rng.uniform(0.01, 0.5, k - 1)), 1.0)
            lower = np.append(rng.uniform(0.6, 0.99, k - 1), 1.0)
            n_rest = int(rng.integers(1_000, 100_000))
            need = float(rng.uniform(0.7, 0.98)) * n_rest
            margin = split_margin_estimate(n_rest, 0.01)
            start = time.perf_counter()
            solve_mix(costs, lower, need, n_rest, margin)
            times.append(time.perf_counter() - start)
        t = 1000 * np.asarray(times)
        rows.append(
            OverheadRow(
                "solve_mix", f"{k} models", "random instances", k, repeats, float(np.median(t)) / 1000, float("nan"),
                float(np.median(t)), float(np.quantile(t, 0.9)), float(t.max()),
                note="random costs, bounds in [0.6, 0.99], 1,000-100,000 remaining items",
            )
        )
    return rows
