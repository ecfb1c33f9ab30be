"""Statistics behind the guarantee: exact bounds, planned looks, δ budgets, assignment margins.

Everything here is pure and deterministic. The guarantee rests on three facts, each implemented once:

1. Items are profiled in a uniformly random order, so the items profiled so far are a sample drawn
   *without replacement* from the batch. The exact one-sided hypergeometric bound on the number of
   agreeing items in the whole batch (:func:`hypergeom_lower`) is therefore valid at any planned look.
2. Bounds are only computed at looks planned before any data is seen (:class:`LookSchedule`), and the
   error budget δ is split across models and looks in advance (:class:`DeltaBudget`). A union bound over
   every (model, look) pair keeps the chance that *any* bound used is wrong below its share of δ, whatever
   the stopping rule and whichever bound ends up being used.
3. When the remaining items are split among several models at random, the realised agreement can fall
   short of its expectation; :func:`split_lower` (the exact hypergeometric quantile of each model's share)
   covers that gap with its own share of δ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats

__all__ = [
    "hypergeom_lower",
    "hypergeom_upper",
    "binomial_lower",
    "binomial_upper",
    "clopper_pearson",
    "wilson_lower",
    "auroc",
    "LookSchedule",
    "DeltaBudget",
    "split_lower",
    "split_margin_estimate",
    "rest_agreeing_lower",
    "rest_lower_bound",
    "approx_lower",
    "approx_upper",
    "BettingCS",
    "betting_lower",
    "betting_approx_lower",
]


@lru_cache(maxsize=200_000)
def hypergeom_lower(successes: int, draws: int, population: int, alpha: float) -> int:
    """Exact one-sided (1-alpha) lower confidence bound on the number of successes in a finite population.

    ``draws`` items were sampled uniformly without replacement from ``population`` items and
    ``successes`` of them were successes. Returns the smallest count K such that observing at least
    ``successes`` has probability above ``alpha`` when the population holds K successes; for the true
    count K*, P(bound > K*) <= alpha.
    """
    _check_counts(successes, draws, population)
    if successes == 0:
        return 0
    lo, hi = successes, population - (draws - successes)
    if _tail_at_least(successes, draws, population, lo) > alpha:
        return lo
    # P(X >= successes | K) grows with K: find the smallest K where it exceeds alpha. Start from a normal
    # approximation and gallop outwards, so that a handful of exact tail evaluations suffice.
    guess = _normal_guess(successes, draws, population, alpha, lo, hi)
    if _tail_at_least(successes, draws, population, guess) > alpha:
        hi, step = guess, 1
        while hi - step > lo and _tail_at_least(successes, draws, population, hi - step) > alpha:
            hi -= step
            step *= 2
        lo = max(lo, hi - step)
    else:
        lo, step = guess, 1
        while lo + step < hi and _tail_at_least(successes, draws, population, lo + step) <= alpha:
            lo += step
            step *= 2
        hi = min(hi, lo + step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _tail_at_least(successes, draws, population, mid) > alpha:
            hi = mid
        else:
            lo = mid
    return hi


def _normal_guess(successes: int, draws: int, population: int, alpha: float, lo: int, hi: int) -> int:
    if hi - lo <= 2:
        return lo + 1
    p0 = approx_lower(successes / draws, draws, population, alpha)
    return int(min(max(round(population * p0), lo + 1), hi - 1))


def approx_lower(rate: float, draws: int, population: int | None, alpha: float) -> float:
    """Wilson score lower bound with the finite-population correction: a fast approximation of
    :func:`hypergeom_lower` (as a fraction), usually within a few items of it. For planning, never for
    certificates."""
    if draws <= 0:
        return 0.0
    z = float(stats.norm.isf(alpha))
    fpc = 1.0 if population is None else (population - draws) / max(1, population - 1)
    c = z * z * fpc / draws
    p = min(max(rate, 0.0), 1.0)
    return max(0.0, (p + c / 2 - math.sqrt(c * p * (1 - p) + c * c / 4)) / (1 + c))


def approx_upper(rate: float, draws: int, population: int | None, alpha: float) -> float:
    """Mirror image of :func:`approx_lower`."""
    return 1.0 - approx_lower(1.0 - rate, draws, population, alpha)


@lru_cache(maxsize=200_000)
def hypergeom_upper(successes: int, draws: int, population: int, alpha: float) -> int:
    """Exact one-sided (1-alpha) upper confidence bound on the population's number of successes."""
    _check_counts(successes, draws, population)
    failures = draws - successes
    return population - hypergeom_lower(failures, draws, population, alpha)


def _tail_at_least(successes: int, draws: int, population: int, k: int) -> float:
    return float(stats.hypergeom.sf(successes - 1, population, k, draws))


def _check_counts(successes: int, draws: int, population: int) -> None:
    if not (0 <= successes <= draws <= population):
        raise ValueError(f"need 0 <= successes <= draws <= population, got {successes}, {draws}, {population}")


def binomial_lower(successes, trials: int, alpha: float):
    """One-sided Clopper–Pearson lower bound on a Bernoulli mean (no finite-population correction).

    ``successes`` may be an array: the bounds come back as an array of the same shape."""
    k = np.asarray(successes, dtype=float)
    with np.errstate(invalid="ignore"):
        lower = special.betaincinv(np.maximum(k, 1e-300), trials - k + 1, alpha)
    out = np.where(k <= 0, 0.0, lower)
    return float(out) if out.ndim == 0 else out


def binomial_upper(successes, trials: int, alpha: float):
    """One-sided Clopper–Pearson upper bound on a Bernoulli mean (1 where every trial succeeded)."""
    k = np.asarray(successes, dtype=float)
    with np.errstate(invalid="ignore"):
        upper = special.betaincinv(k + 1, np.maximum(trials - k, 1e-300), 1.0 - alpha)
    out = np.where(k >= trials, 1.0, upper)
    return float(out) if out.ndim == 0 else out


@lru_cache(maxsize=200_000)
def clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval exactly as the SMART reference code computes it.

    Kept for the ``paper`` method: a lower end of NaN (k=0) becomes 0 and an upper end of NaN (k=n)
    stays NaN, as published.
    """
    a = 1.0 - confidence
    lower = stats.beta.ppf(a / 2, successes, trials - successes + 1)
    upper = stats.beta.ppf(1 - a / 2, successes + 1, trials - successes)
    return (0.0 if math.isnan(lower) else float(lower)), float(upper)


def wilson_lower(successes: int, trials: int, confidence: float = 0.95) -> float:
    """Wilson score lower bound (one-sided at (1+confidence)/2 like the usual two-sided interval)."""
    if trials == 0:
        return 0.0
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - spread) / denom)


@dataclass(frozen=True)
class LookSchedule:
    """Sample sizes at which bounds may be computed, fixed before profiling starts.

    Looks grow geometrically (``first``, ``first*ratio``, ...) up to the batch size, so a batch of
    50,000 items has about 16 looks: each gets an equal share of a model's δ. Profiling may stop at any
    look, for any reason, and the bound of that look stays valid.
    """

    population: int
    first: int = 100
    ratio: float = 1.5
    step: int = 10

    @property
    def sizes(self) -> tuple[int, ...]:
        return _look_sizes(self.population, self.first, self.ratio, self.step)

    @property
    def count(self) -> int:
        return len(self.sizes)

    def next_size(self, n: int) -> int | None:
        """The first look strictly after ``n`` profiled items, or None if there is none."""
        for size in self.sizes:
            if size > n:
                return size
        return None

    def index(self, n: int) -> int:
        """Index of the look at exactly ``n`` items; ValueError if ``n`` is not a look."""
        return self.sizes.index(n)


@lru_cache(maxsize=1024)
def _look_sizes(population: int, first: int, ratio: float, step: int) -> tuple[int, ...]:
    if population <= 0:
        return ()
    sizes: list[int] = []
    size = float(min(first, population))
    while True:
        rounded = min(population, int(math.ceil(size / step)) * step)
        if not sizes or rounded > sizes[-1]:
            sizes.append(rounded)
        if rounded >= population:
            break
        size = size * ratio if ratio > 1 else size + step
    return tuple(sizes)


@dataclass(frozen=True)
class DeltaBudget:
    """How the total error probability δ is spent, decided before any data is seen.

    ``assignment`` is reserved for the gap between expected and realised agreement when the remaining
    items are split among several models at random; the rest is split equally over the candidate models
    and, for each model, equally over the planned looks.
    """

    delta: float
    n_models: int
    n_looks: int
    assignment: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise ValueError("delta must be in (0, 1)")
        if not 0 <= self.assignment < self.delta:
            raise ValueError("the assignment share must be in [0, delta)")

    @property
    def per_model(self) -> float:
        return (self.delta - self.assignment) / max(1, self.n_models)

    @property
    def per_look(self) -> float:
        """α for one bound: one model at one look."""
        return self.per_model / max(1, self.n_looks)


def split_lower(agreeing: int, population: int, drawn: int, alpha: float) -> int:
    """Exact lower ``alpha``-quantile of a model's agreeing answers on a random share of the remaining items.

    ``population`` items remain, ``agreeing`` of them are answered in agreement by the model (a lower bound
    on that count is enough: the quantile grows with it), and the model gets ``drawn`` of them chosen
    uniformly without replacement. The agreeing answers it gives are hypergeometric, and the result q
    satisfies P(agreeing answers < q) <= alpha.
    """
    _check_counts(0, drawn, population)
    agreeing = min(max(int(agreeing), 0), population)
    if drawn <= 0 or agreeing <= 0:
        return 0
    if drawn >= population:
        return agreeing
    q = int(stats.hypergeom.ppf(alpha, population, agreeing, drawn))
    # ppf is the smallest q with CDF(q) >= alpha, so P(X < q) = CDF(q - 1) < alpha; guard the float edge.
    while q > 0 and stats.hypergeom.cdf(q - 1, population, agreeing, drawn) > alpha:
        q -= 1
    return max(q, 0)


def split_margin_estimate(n_rest: int, delta: float) -> float:
    """Planning estimate, in items, of the split margin: the normal approximation at the largest variance
    (agreement and share both one half). Only look-ahead projections use it, never the certificate."""
    if n_rest <= 0:
        return 0.0
    return float(stats.norm.isf(delta)) * math.sqrt(n_rest) / 4.0


def rest_agreeing_lower(k_low: int, successes: int, model_draws: int, profiled: int, population: int) -> int:
    """Lower bound on the agreeing items among those not profiled, from a lower bound ``k_low`` on the
    whole population's count.

    The model was checked on the first ``model_draws`` items of the random order (``successes`` agreed);
    the reference answered the first ``profiled`` >= ``model_draws`` items, which leave the pool. Items
    profiled by the reference but not by this model are counted as if they had all agreed: that only
    lowers the bound.
    """
    rest = population - profiled
    return int(min(max(k_low - successes - (profiled - model_draws), 0), max(rest, 0)))


def rest_lower_bound(
    successes: int, model_draws: int, profiled: int, population: int, alpha: float
) -> float:
    """Lower bound on a model's agreement over the items not profiled, as a fraction of those items
    (see :func:`rest_agreeing_lower`)."""
    rest = population - profiled
    if rest <= 0:
        return 1.0
    k_low = hypergeom_lower(successes, model_draws, population, alpha)
    return rest_agreeing_lower(k_low, successes, model_draws, profiled, population) / rest


def auroc(positives, scores) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative, ties
    counting half. Items with a NaN score are left out; NaN when either class is empty."""
    scores = np.asarray(scores, dtype=float)
    positives = np.asarray(positives, dtype=bool)
    keep = ~np.isnan(scores)
    scores, positives = scores[keep], positives[keep]
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------------------
# Anytime-valid lower confidence sequence for sampling without replacement (betting)


class BettingCS:
    """Anytime-valid lower confidence sequence for the total of a finite population of values in [0, 1],
    observed one at a time in a uniformly random order (sampling without replacement).

    Waudby-Smith & Ramdas ("Confidence sequences for sampling without replacement", NeurIPS 2020;
    "Estimating means of bounded random variables by betting", JRSS-B 2023). For a hypothesised population
    total g (mean g/N), the capital after t draws is

        K_t(g) = prod_{i<=t} (1 + lambda_i (X_i - m_i(g))),   m_i(g) = (g - S_{i-1}) / (N - i + 1),

    where m_i(g) is the mean of the values not yet drawn if the total is g and lambda_i >= 0 depends only
    on X_1..X_{i-1}. For the true total, K_t is a non-negative martingale with K_0 = 1 (a supermartingale
    for any smaller g is not needed: the hypothesis is a point), so by Ville's inequality
    P(exists t: K_t(true total) >= 1/alpha) <= alpha. Every total whose capital ever reached 1/alpha is
    rejected, at any time, for any reason to look, and as often as one likes.

    lambda_i does not depend on g, so each factor decreases in g and K_t(g) is non-increasing in g: the
    rejected totals form a down-set and the lower bound is one plus the largest rejected total (an exact
    count when the grid has one point per integer total; totals between two grid points of a coarser grid
    are treated as not rejected, which only lowers the bound). Factors are clipped at 0, which only
    lowers the capital of impossible totals.

    The bet is the predictable plug-in lambda_i = min(cap, sqrt(2 ln(1/alpha) / (sigma_{i-1}^2 h_i))) with
    the regularised variance of WSR 2023. ``h_i`` is the sample size at which the bound matters: the
    caller may change it between draws (:meth:`set_horizon`) from what it has seen so far — it stays
    predictable — and the bound is tightest near it (close to the exact one-look hypergeometric bound
    at alpha). Without a horizon, h_i = i ln(i + 1) (WSR's anytime choice).
    """

    def __init__(self, population: int, alpha: float, horizon: float | None = None, cap: float = 0.9,
                 grid: int = 10_000):
        if population <= 0:
            raise ValueError("population must be positive")
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if not 0 < cap <= 1:
            raise ValueError("cap must be in (0, 1]")
        self.population = int(population)
        self.alpha = float(alpha)
        self.cap = float(cap)
        self.horizon = horizon
        step = max(1.0, population / grid)
        self.totals = np.arange(0.0, population + step / 2, step)
        if self.totals[-1] < population:
            self.totals = np.append(self.totals, float(population))
        self.integer_grid = step == 1.0
        self.log_capital = np.zeros(len(self.totals))
        self.threshold = math.log(1.0 / alpha)
        self.rejected = -1  # index of the largest grid total ever rejected
        self.t = 0
        self.total = 0.0  # S_t
        self.total_sq = 0.0

    def set_horizon(self, horizon: float | None) -> None:
        """The sample size the bets are tuned for, from here on (chosen from past draws only)."""
        self.horizon = horizon

    def _bet(self, i: int) -> float:
        n0 = i - 1
        mu = (0.5 + self.total) / (n0 + 1)
        var = (0.25 + self.total_sq - 2.0 * mu * self.total + n0 * mu * mu) / (n0 + 1)
        h = max(float(self.horizon), 1.0) if self.horizon else i * math.log(i + 1)
        return min(self.cap, math.sqrt(2.0 * self.threshold / (max(var, 1e-12) * h)))

    def update(self, values) -> None:
        """Observe the next draws, in their random order."""
        values = np.asarray(values, dtype=float).ravel()
        if values.size == 0:
            return
        if np.any((values < 0) | (values > 1)) or np.any(np.isnan(values)):
            raise ValueError("values must lie in [0, 1]")
        if self.t + values.size > self.population:
            raise ValueError("more draws than the population holds")
        k = values.size
        bets = np.empty(k)
        before = np.empty(k)
        for j, x in enumerate(values):  # scalar recursions; the grid work is vectorised below
            i = self.t + 1
            bets[j] = self._bet(i)
            before[j] = self.total
            self.t = i
            self.total += x
            self.total_sq += x * x
        start = self.t - k  # draws already seen before this update
        remaining = self.population - (start + np.arange(k))  # N - i + 1
        # Totals already rejected stay rejected: only the grid above the largest one is carried on.
        lo = self.rejected + 1
        totals = self.totals[lo:]
        means = (totals[None, :] - before[:, None]) / remaining[:, None]
        factors = np.maximum(1.0 + bets[:, None] * (values[:, None] - means), 0.0)
        with np.errstate(divide="ignore"):
            path = np.cumsum(np.log(factors), axis=0) + self.log_capital[lo:][None, :]
        self.log_capital[lo:] = path[-1]
        hit = np.flatnonzero((path >= self.threshold).any(axis=0))
        if hit.size:
            self.rejected = max(self.rejected, lo + int(hit.max()))

    @property
    def draws(self) -> int:
        return self.t

    def lower_total(self) -> float:
        """Lower bound on the population total, valid simultaneously for every t (never decreases)."""
        bound = self.totals[self.rejected] if self.rejected >= 0 else 0.0
        return max(self.total, bound)

    def lower_count(self) -> int:
        """Integer lower bound on the number of ones, for 0/1 values: one more than the largest rejected
        count (at least the ones already seen)."""
        if self.rejected < 0:
            return int(round(self.total))
        largest = self.totals[self.rejected]
        return int(max(round(self.total), math.floor(largest) + 1))

    def lower_mean(self) -> float:
        return self.lower_total() / self.population


def betting_lower(values, population: int, alpha: float, horizon: float | None = None, cap: float = 0.9) -> int:
    """One-shot :class:`BettingCS` lower bound on the count of ones among ``population`` 0/1 items, from
    ``values`` drawn without replacement in this order. Valid at this sample size and, simultaneously, at
    every earlier one."""
    cs = BettingCS(population, alpha, horizon=horizon, cap=cap)
    cs.update(values)
    return cs.lower_count()


def betting_approx_lower(rate: float, draws: int, population: int | None, alpha: float) -> float:
    """Planning estimate of :class:`BettingCS`'s lower bound (as a fraction) after ``draws`` draws with the
    horizon tuned to ``draws``: the finite-population Wilson bound at a smaller level, which tracks the
    betting bound within about half a point at the sizes that matter. For look-ahead only."""
    return approx_lower(rate, draws, population, alpha / BETTING_APPROX_FACTOR)


BETTING_APPROX_FACTOR = 3.0
