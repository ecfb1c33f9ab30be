"""The score-first cascade's statistics: a certified prefix of the score order, and its planning.

Setting. Every item of a population of ``population`` items has a confidence score from the cheap model, known
before any reference label is bought; the items are put in one fixed order, highest score first (ties broken by
a random order drawn before sampling). The reference labels a uniformly random sample of ``draws`` items
(without replacement, the size fixed before the first label). Keeping the cheap answer on the first k items of
the order, except on the sampled ones (they take the reference's answer), leaves U(k) wrong answers; the batch
may hold at most ``allowed`` (A) of them.

The certificate. Let c be the largest count with P(X_j <= j) <= alpha for every j <= c, where X_j is
hypergeometric (``draws`` draws from ``population`` items of which A + 1 + j are marked). The certified
prefix ends just before the (c + 1)-th sampled wrong answer of the order (or covers the order if there are
no more), and is never shorter than A items (which cannot hold more than A wrong answers).

Why it is valid, for any placement of the wrong answers in the order. U(k) grows by one at each wrong answer
that was not sampled. If the certified prefix holds more than A of them, let k1 be the position of the
(A + 1)-th, and J the number of sampled wrong answers before it; the prefix reaches k1, so J <= c. Then among
the first A + 1 + c wrong answers of the order, at least A + 1 were not sampled (the first A + 1 + J already
hold A + 1), so at most c were sampled. Those A + 1 + c items are fixed before sampling, so how many of them
the sample holds is X_c: the failure has probability at most P(X_c <= c) <= alpha. (If the population holds
only W < A + 1 + c wrong answers, the same argument bounds it by P(X_j <= j) with j = W - A - 1 <= c.) No
test per prefix and no multiplicity: the sampled correct answers play no part, and each sampled wrong answer
counts twice in the product's favour, as evidence and as an answer the reference corrects.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats

__all__ = [
    "CERTIFIED_SHARE", "UNLIMITED", "certificate_budget", "certified_prefix", "expected_rank_fraction",
    "plan_sample", "sample_size", "wrong_budget",
]

UNLIMITED = 1 << 62  # wrong_budget's value when no placement of the wrong answers can break the guarantee
# The certificate's failure bound, as a share of its alpha. The bound is exact (it is reached whenever the batch
# holds enough wrong answers), so spending all of alpha would make the realised miss rate sit at alpha itself;
# a few more labels (sample_size) buy the same budget at this share, and the guarantee holds with room.
CERTIFIED_SHARE = 0.6


@lru_cache(maxsize=4096)
def wrong_budget(population: int, allowed: int, draws: int, alpha: float) -> int:
    """c: how many sampled wrong answers the certified prefix may contain (-1: none; ``UNLIMITED``: any).

    The largest c with P(X_j <= j) <= alpha for every j <= c, X_j ~ Hypergeometric(population, allowed + 1 + j,
    draws) (module doc). Only j <= population - allowed - 1 are possible; when every possible j passes, no
    placement of the wrong answers can break the guarantee.
    """
    top = population - allowed - 1
    if top < 0:
        return UNLIMITED
    j_max = min(top, draws)
    lo, width = 0, 64
    while lo <= j_max:
        j = np.arange(lo, min(j_max, lo + width - 1) + 1)
        q = stats.hypergeom.cdf(j, population, allowed + 1 + j, draws)
        failing = np.flatnonzero(~(q <= alpha))
        if failing.size:
            return int(j[failing[0]]) - 1
        lo, width = int(j[-1]) + 1, width * 2
    return UNLIMITED


def sample_size(population: int, allowed: int, draws: int, alpha: float) -> int:
    """The certification sample's size: the smallest size from ``draws`` on whose budget at the certificate's
    level (``CERTIFIED_SHARE * alpha``) is the budget ``draws`` labels would have at ``alpha``. A function of
    the batch's shape only (no label), so it may be fixed before sampling."""
    target = wrong_budget(population, allowed, draws, alpha)
    size = min(draws, population)
    if target < 0 or target == UNLIMITED:
        return size
    while size < population and wrong_budget(population, allowed, size, CERTIFIED_SHARE * alpha) < target:
        size += 1
    return size


def certificate_budget(population: int, allowed: int, draws: int, alpha: float) -> int:
    """The budget the certificate uses: :func:`wrong_budget` at its failure bound ``CERTIFIED_SHARE * alpha``."""
    return wrong_budget(population, allowed, draws, CERTIFIED_SHARE * alpha)


def certified_prefix(
    sampled_ranks: np.ndarray, sampled_wrong: np.ndarray, population: int, allowed: int, alpha: float
) -> int:
    """Length of the certified prefix (0..population) of the score order (module doc), at the failure bound
    ``CERTIFIED_SHARE * alpha``.

    ``sampled_ranks``: 0-based positions in the order of the labelled items — the whole uniform sample, as
    its size enters the bound; ``sampled_wrong``: whether the cheap answer disagrees with the reference there.
    """
    ranks = np.asarray(sampled_ranks, dtype=np.int64)
    wrong = np.asarray(sampled_wrong, dtype=bool)
    if population <= allowed:
        return population
    budget = certificate_budget(population, allowed, len(ranks), alpha)
    wrong_ranks = np.sort(ranks[wrong])
    if budget < 0:
        return allowed
    if len(wrong_ranks) <= budget:
        return population
    return max(allowed, int(wrong_ranks[budget]))  # everything before the (budget + 1)-th sampled wrong answer


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
    pilot's, shrunk towards the pilot's overall rate by ``prior_items`` pseudo-items. A prefix is projected
    to be kept while its expected sampled wrong answers plus ``spread`` standard deviations stay within the
    sample's budget (:func:`wrong_budget`). Returns (sample size, projected cost of the population, projected
    kept fraction), over ``sizes`` if given; the cost counts the head model on every item, the reference on
    every item not kept and on the labelled items inside the kept prefix. For planning only: no certificate
    rests on it.
    """
    if spread is None:
        # Choosing the size, one deviation guards the choice (the prefix ends at the first sampled wrong answer
        # past the budget, so the typical outcome is worse than the expected counts); with the size given, the
        # projection only decides whether to bet on a first pass, and the expected outcome is the figure for it.
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
    budget = np.array([min(wrong_budget(population, allowed, int(g), alpha), population) for g in grid[:, 0]])
    # The prefix ends at the (budget + 1)-th sampled wrong answer: the chance it reaches a prefix is that of
    # seeing at most ``budget`` there (Poisson in the expected count). At the expected outcome the kept share
    # is the sum of those chances; ``spread`` deviations worse, it is the longest prefix reached that often.
    reach = stats.poisson.cdf(budget[:, None], labelled * rate)
    reach = np.where(prefixes[None, :] <= allowed, 1.0, reach)
    if spread > 0:
        often = float(stats.norm.cdf(spread))
        reached = reach >= often
        last = np.where(reached.any(axis=1), len(prefixes) - 1 - np.argmax(reached[:, ::-1], axis=1), -1)
        kept = np.where(last >= 0, prefixes[np.maximum(last, 0)], 0)
    else:
        kept = reach.sum(axis=1) * population / len(prefixes)
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
