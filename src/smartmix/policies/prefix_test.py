"""The score-first cascade's statistics: an exact fixed-sequence test over score prefixes, and its planning.

Setting. Every item of a population of ``population`` items has a confidence score from the cheap model, known
before any reference label is bought; the items are put in one fixed order, highest score first (ties broken by
a random order drawn before sampling). Keeping the cheap answer on the first k items of that order leaves
D(k) wrong answers among them; the batch may hold at most ``allowed`` wrong answers. The hypothesis
H_k: D(k) > allowed is a statement about the batch alone, and D(k) only grows with k, so the hypotheses are
nested: the true ones form a suffix of the order.

The reference labels a uniformly random sample (without replacement) of the population. Given how many
sampled items fall in the first k, those are a uniformly random subset of the first k items, so the number
of wrong answers among them is hypergeometric: H_k is rejected when observing at most that many wrong
answers has probability <= alpha under D(k) = allowed + 1 (the most favourable count of the null; the
probability only falls as D(k) grows). Testing k = 1, 2, ... in order, each at the full alpha, and keeping
the longest prefix whose every test rejected is fixed-sequence testing: a wrong certificate needs the test
at the first true null to reject, which has probability <= alpha. A prefix of at most ``allowed`` items
needs no test at all.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["certified_prefix", "expected_rank_fraction", "hypergeom_cdf", "prefix_passes", "plan_sample"]


def prefix_passes(k: int, sampled: int, wrong: int, allowed: int, alpha: float) -> bool:
    """Whether H_k (more than ``allowed`` wrong answers among the first ``k`` items) is rejected.

    ``sampled`` of the first ``k`` items were labelled, ``wrong`` of them disagree.
    """
    if k <= allowed:
        return True
    if sampled <= 0:
        return False
    return hypergeom_cdf(wrong, k, allowed + 1, sampled) <= alpha


def hypergeom_cdf(x: int, population: int, successes: int, draws: int) -> float:
    """P(X <= x) for X ~ Hypergeometric(population, successes, draws): the first pmf term from log-gamma,
    the others by the ratio recurrence. Agrees with scipy's to ~1e-12 and is ~50x faster on one value."""
    low = max(0, draws - (population - successes))
    high = min(draws, successes)
    if x < low:
        return 0.0
    if x >= high:
        return 1.0
    lg = math.lgamma
    log_first = (
        lg(successes + 1) - lg(low + 1) - lg(successes - low + 1)
        + lg(population - successes + 1) - lg(draws - low + 1) - lg(population - successes - draws + low + 1)
        - lg(population + 1) + lg(draws + 1) + lg(population - draws + 1)
    )
    log_term = log_total = log_first  # in logs: the first terms can underflow where the mass lies later
    for j in range(low, x):
        log_term += math.log((successes - j) * (draws - j) / ((j + 1) * (population - successes - draws + j + 1)))
        big, small = (log_total, log_term) if log_total >= log_term else (log_term, log_total)
        log_total = big + math.log1p(math.exp(small - big))
    return min(1.0, math.exp(log_total))


def certified_prefix(
    sampled_ranks: np.ndarray, sampled_wrong: np.ndarray, population: int, allowed: int, alpha: float
) -> int:
    """Longest prefix k (0..population) of the score order whose tests, from k = 1 on, all reject.

    ``sampled_ranks``: 0-based positions in the order of the labelled items (a uniform sample of the
    population); ``sampled_wrong``: whether the cheap answer disagrees with the reference there.

    Between two labelled positions the sample counts are constant and the p-value only grows with k (more
    items, the same evidence), so each stretch passes up to a point found by bisection: O(n log N) tests.
    """
    ranks = np.asarray(sampled_ranks, dtype=np.int64)
    wrong = np.asarray(sampled_wrong, dtype=bool)
    order = np.argsort(ranks, kind="stable")
    ranks, wrong = ranks[order], wrong[order]
    if population <= allowed:
        return population
    k = min(allowed, population)  # every prefix up to here passes without evidence
    while k < population:
        # the stretch of prefixes k+1 .. end shares the counts of the labelled items in the first k+1
        n_in = int(np.searchsorted(ranks, k + 1, side="left"))
        d_in = int(wrong[:n_in].sum())
        end = int(ranks[n_in]) if n_in < len(ranks) else population  # the next labelled item enters at end+1
        if prefix_passes(end, n_in, d_in, allowed, alpha):  # the stretch's weakest prefix: all pass
            k = end
            continue
        if not prefix_passes(k + 1, n_in, d_in, allowed, alpha):
            return k
        lo, hi = k + 1, end  # lo passes, hi fails: find the last passing prefix
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if prefix_passes(mid, n_in, d_in, allowed, alpha):
                lo = mid
            else:
                hi = mid
        return lo
    return k


def plan_sample(
    pilot_position: np.ndarray,
    pilot_wrong: np.ndarray,
    population: int,
    allowed: int,
    alpha: float,
    head_cost: float,
    reference_cost: float,
    prior_items: float = 2.0,
    spread: float | None = None,
    tolerance: float = 0.03,
    sizes: list[int] | None = None,
) -> tuple[int, float, float]:
    """Sample size that minimises the projected cost of a score-first cascade, from a pilot.

    ``pilot_position``: each pilot item's position in the score order as a fraction in [0, 1] (0 = highest
    score); ``pilot_wrong``: whether the cheap model disagreed there. The wrong-answer rate of a prefix is the
    pilot's, shrunk towards the pilot's overall rate by ``prior_items`` pseudo-items. Projections put the
    expected wrong count plus ``spread`` standard deviations into a normal approximation of the test
    (Wilson with the finite-population correction). Returns (sample size, projected cost of the population, projected
    kept fraction), over ``sizes`` if given; the cost counts the head model on every item, the reference on every item not kept and
    on the labelled items inside the kept prefix. For planning only: no certificate rests on it.
    """
    if spread is None:
        # Choosing the size, one deviation guards the choice (the test stops at the first failing prefix, so
        # the typical outcome is worse than the expected counts); with the size given, the projection only
        # decides whether to bet on a first pass, and the expected outcome is the figure for that bet.
        spread = 1.0 if sizes is None else 0.0
    reference_only = population * reference_cost
    if population <= 0:
        return 0, 0.0, 0.0
    pos = np.asarray(pilot_position, dtype=float)
    wrong = np.asarray(pilot_wrong, dtype=bool)
    overall = (wrong.sum() + 0.5) / (len(wrong) + 1.0)
    order = np.argsort(pos, kind="stable")
    pos, wrong = pos[order], wrong[order]
    fractions = np.linspace(0.0, 1.0, 201)[1:]
    below = np.searchsorted(pos, fractions, side="right")
    cum_wrong = np.concatenate([[0], np.cumsum(wrong)])[below]
    rate = (cum_wrong + prior_items * overall) / (below + prior_items)
    prefixes = np.maximum(1, np.floor(fractions * population)).astype(np.int64)
    if sizes is None:
        sizes = [0, *np.geomspace(10, max(10, population), 40).astype(np.int64)]
    grid = np.array(sorted(set(int(x) for x in sizes)), dtype=float)
    grid = np.minimum(grid, population)[:, None]
    labelled = grid * prefixes / population  # expected labels in each prefix, per sample size
    wrong_seen = labelled * rate + spread * np.sqrt(labelled * rate * (1 - rate))
    upper = _wilson_upper(wrong_seen, labelled, prefixes, alpha) * prefixes
    passes = (prefixes <= allowed) | ((labelled >= 1) & (upper <= allowed))
    failed = ~passes
    first_fail = np.where(failed.any(axis=1), failed.argmax(axis=1), len(prefixes))
    kept = np.where(first_fail > 0, prefixes[np.maximum(first_fail - 1, 0)], 0)
    kept = np.maximum(kept, min(allowed, population))
    costs = population * head_cost + reference_cost * (population - kept + grid[:, 0] * kept / population)
    # the projected cost rises steeply below the best size and slowly above it: of the sizes within
    # ``tolerance`` of the best, take the largest. The tolerance is on what the size changes (the reference's
    # share), not on a total that the head's pass inflates: a pricey head would otherwise buy many labels.
    variable = costs - population * head_cost
    i = int(np.flatnonzero(variable <= variable.min() * (1 + tolerance))[-1])
    best = (int(grid[i, 0]), float(costs[i]), float(kept[i] / population))
    if best[1] >= reference_only + population * head_cost:
        return 0, best[1], 0.0
    return best[0], best[1], best[2]


def expected_rank_fraction(pilot_scores: np.ndarray, batch_scores: np.ndarray | None = None) -> np.ndarray:
    """Each pilot item's position in the score order (0 = highest), as a fraction of the ordered items.

    Against the batch's own scores when they are known, else against the pilot's. Pilot items that share a
    score are spread evenly over the stretch that score occupies, in their given order: the certified order
    breaks ties at random, so a tie's items sit anywhere in its stretch. (Placing them all at its middle
    left the top of a large tie, such as the many answers an API reports with log-probability 0, without a
    single pilot item, and the plan fell back on the overall wrong rate there.)
    """
    s = np.asarray(pilot_scores, dtype=float)
    reference = np.sort(np.asarray(pilot_scores if batch_scores is None else batch_scores, dtype=float))
    if not len(reference) or not len(s):
        return np.zeros(len(s))
    higher = len(reference) - np.searchsorted(reference, s, side="right")
    ties = np.searchsorted(reference, s, side="right") - np.searchsorted(reference, s, side="left")
    order = np.lexsort((np.arange(len(s)), -s))  # highest score first, ties in their given order
    ordered = s[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    within = np.arange(len(s)) - starts[group]
    size = np.diff(np.r_[starts, len(s)])[group]
    position = np.empty(len(s))
    position[order] = higher[order] + (within + 0.5) * ties[order] / size
    return position / len(reference)


def _wilson_upper(wrong: np.ndarray, labelled: np.ndarray, population: np.ndarray, alpha: float) -> np.ndarray:
    """Vectorised Wilson upper bound with the finite-population correction (as a rate); 1 where nothing is
    labelled. The planning stand-in for the exact test."""
    z = float(stats.norm.isf(alpha))
    n = np.maximum(labelled, 1e-9)
    fpc = np.clip((population - labelled) / np.maximum(population - 1, 1), 0.0, 1.0)
    c = z * z * fpc / n
    p = np.clip(wrong / n, 0.0, 1.0)
    upper = (p + c / 2 + np.sqrt(c * p * (1 - p) + c * c / 4)) / (1 + c)
    return np.where(labelled > 0, np.minimum(upper, 1.0), 1.0)
