"""What the benchmarks run on: recorded datasets, bootstrap batches, synthetic adversarial pools, seeds.

Every batch is a pure function of its seed, so any trial can be rerun on its own from the seed printed in
the report (:func:`trial_seed` derives it from the base seed, the setting and the trial number).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from smartmix.errors import ConfigError, DataError

__all__ = [
    "Batch",
    "BenchData",
    "adversarial_batch",
    "adversarial_rates",
    "bootstrap_batch",
    "policy_seed",
    "default_data_paths",
    "find_data_files",
    "load_dataset",
    "pool_batch",
    "simulated_batch",
    "trial_seed",
    "SCORES",
]

SCORES = ("recorded", "none", "consistency")

SHARED_DATA = Path("..") / "shared" / "data"


@dataclass(frozen=True, eq=False)
class Batch:
    """Per-item outcomes of one batch: candidates cheapest first, the reference last.

    ``score``: each model's confidence score per item in [0, 1] (NaN where unknown) — ``exp`` of the recorded
    log-probability for recorded data, synthetic for adversarial pools — or None where the batch has none.
    """

    models: tuple[str, ...]
    agree: np.ndarray
    cost: np.ndarray
    score: np.ndarray | None  # (n, n_models) or None

    @property
    def n_items(self) -> int:
        return int(self.agree.shape[0])


@dataclass(frozen=True, eq=False)
class BenchData:
    """One recorded dataset, as arrays ready to be resampled.

    ``score``: each model's score per item in [0, 1] (NaN where unknown), or None when the bench runs with
    ``--scores none``; ``scores`` names where it came from (:data:`SCORES`).
    """

    name: str
    path: str
    models: tuple[str, ...]
    agree: np.ndarray
    cost: np.ndarray
    score: np.ndarray | None
    scores: str = "recorded"

    @property
    def n_items(self) -> int:
        return int(self.agree.shape[0])


def trial_seed(base: int, *keys: object) -> int:
    """A 63-bit seed derived from the base seed and the setting (dataset, N, T, trial number, ...).

    Keys are hashed with CRC-32 of their text, so the seed does not depend on Python's hash randomisation,
    on the order settings are run in, or on the number of workers.
    """
    words = [int(base) & 0xFFFFFFFF, (int(base) >> 32) & 0xFFFFFFFF]
    words += [zlib.crc32(repr(k).encode()) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> np.uint64(1))


def policy_seed(batch_seed: int) -> int:
    """The seed a method runs with on the batch drawn from ``batch_seed``: derived from it, but a separate stream.

    Drawing the batch and the method's own randomness (its random order, its samples) from generators seeded
    alike correlates them: ``default_rng(s).integers`` (the bootstrap rows) and ``default_rng(s).permutation``
    (the order a policy samples in) consume the same raw words, so which items a method samples is tied to
    which recorded rows the batch holds, and hit rates measured that way are not those of a fresh batch.
    """
    return trial_seed(batch_seed, "policy")


# ---------------------------------------------------------------------------------------------------
# Recorded datasets


def find_data_files(paths: Sequence[Path]) -> list[Path]:
    """Every recorded-outputs file named: files as given, folders searched for ``test.jsonl`` files."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            inside = sorted(path.rglob("test.jsonl"))
            if not inside:
                raise DataError(f"no test.jsonl file under {path}; pass recorded-outputs .jsonl files with --data")
            found.extend(inside)
        elif path.exists():
            found.append(path)
        else:
            raise DataError(f"--data {path}: no such file or folder")
    return list(dict.fromkeys(found))


def default_data_paths(cwd: Path | None = None) -> list[Path]:
    """Every ``test.jsonl`` under ``../shared/data`` relative to ``cwd``; an error saying to pass --data."""
    root = (cwd or Path.cwd()) / SHARED_DATA
    files = sorted(root.glob("*/test.jsonl")) if root.is_dir() else []
    if not files:
        raise ConfigError(
            f"no recorded datasets found under {root} (looked for */test.jsonl); "
            "pass one or more files or folders with --data PATH"
        )
    return files


def dataset_name(path: Path) -> str:
    """``mmlu-llama`` for ``.../mmlu-llama/test.jsonl``; ``<folder>-<stem>`` for other file names."""
    stem = path.name.split(".")[0]
    return path.parent.name if stem == "test" else f"{path.parent.name}-{stem}"


def load_dataset(
    path: Path, name: str | None = None, reference: str | None = None, scores: str = "recorded",
    comparator=None,
) -> BenchData:
    """Load a recorded-outputs file; models ordered cheapest first by mean recorded cost, the reference last.

    ``reference``: the model every other is compared with (default: the priciest). ``scores``: ``recorded``
    (``exp`` of the recorded log-probability confidence), ``none`` (no score at all: the shared sets with
    their confidence removed) or ``consistency`` (the confidence removed too, and virtual candidates "A|B"
    from ``smartmix.scores.consistency_candidates``: A's answer, A's + B's cost, score 1 when B agrees with
    A — a score for models without logprobs). Agreement is judged by ``comparator`` (default: exact match
    after normalisation).
    """
    from smartmix.backends.replay import RecordedOutputs
    from smartmix.tasks import ExactComparator

    if scores not in SCORES:
        raise ConfigError(f"--scores must be one of {', '.join(SCORES)}, got '{scores}'")
    recorded = RecordedOutputs.load(path)
    reference = reference or recorded.default_reference()
    models = recorded.pool(reference).names
    if len(models) < 2:
        raise DataError(f"{path}: a benchmark needs at least one model besides the reference ({reference})")
    comparator = comparator or ExactComparator()
    arrays = recorded.arrays(models, reference, comparator)
    from smartmix.scores import score_from_logprob

    agree, cost, score = arrays.agree, arrays.cost, score_from_logprob(arrays.confidence)
    names = tuple(arrays.models)
    if scores == "consistency":
        no_score = np.full(agree.shape, np.nan)
        agree, cost, score, names = _consistency(recorded, names, agree, cost, no_score, comparator)
    return BenchData(
        name=name or dataset_name(Path(path)),
        path=str(path),
        models=names,
        agree=agree,
        cost=cost,
        score=None if scores == "none" else score,
        scores=scores,
    )


def _consistency(recorded, models, agree, cost, score, comparator):
    """The arrays with consistency candidates added (interfaces.md §5), computed once on the whole file:
    the score is an item feature, so resampling items afterwards is the same as computing it per batch."""
    try:
        from smartmix.scores import consistency_candidates
    except ImportError:
        raise ConfigError(
            "--scores consistency needs smartmix.scores.consistency_candidates, which this version of smartmix "
            "does not have yet; use --scores recorded or --scores none"
        ) from None
    answers = np.empty(agree.shape, dtype=object)
    for i, item in enumerate(recorded.items):
        for j, m in enumerate(models):
            answers[i, j] = comparator.parse(recorded.output(item.id, m).answer)
    agree, cost, score, names = consistency_candidates(answers, agree, cost, score, tuple(models), comparator)
    return np.asarray(agree, dtype=bool), np.asarray(cost, dtype=float), np.asarray(score, dtype=float), tuple(names)


def bootstrap_batch(data: BenchData, n_items: int, seed: int) -> Batch:
    """``n_items`` items drawn with replacement from the dataset: the joint per-item behaviour stays real."""
    rows = np.random.default_rng(seed).integers(0, data.n_items, n_items)
    return Batch(data.models, data.agree[rows], data.cost[rows], None if data.score is None else data.score[rows])


# ---------------------------------------------------------------------------------------------------
# Adversarial pools

ADVERSARIAL_PRICES = (1.0, 2.0, 4.0, 8.0)
ADVERSARIAL_REFERENCE_PRICE = 20.0
EXTRA_MODEL_STEP = 0.0025  # each extra candidate sits this much further below the scenario's rate
SCORE_SEPARATION = 1.0  # synthetic scores: sigmoid(±separation + standard normal noise), + where agreeing


def adversarial_rates(rate: float, n_candidates: int) -> tuple[float, ...]:
    """True agreement of each candidate: the cheapest at ``rate``, the others at or slightly below it."""
    return tuple(rate - EXTRA_MODEL_STEP * max(0, j - 1) for j in range(n_candidates))


def synthetic_scores(agree: np.ndarray, rng: np.random.Generator, separation: float = SCORE_SEPARATION) -> np.ndarray:
    """Scores in (0, 1) that are informative but imperfect: sigmoid(±separation + N(0, 1)), + where agreeing."""
    logits = separation * np.where(agree, 1.0, -1.0) + rng.standard_normal(agree.shape)
    return 1.0 / (1.0 + np.exp(-logits))


def adversarial_batch(n_items: int, rates: Sequence[float], seed: int, prices: Sequence[float] | None = None) -> Batch:
    """A synthetic pool: candidate j agrees on exactly round(rates[j] * n) items placed at random.

    Prices are 1, 2, 4, 8 per call for the candidates (or ``prices``) and 20 for the reference. Every
    candidate also gets a synthetic confidence score (:func:`synthetic_scores`), so score-based methods run
    on the same pools.
    """
    candidate_prices = tuple(prices) if prices else ADVERSARIAL_PRICES
    if len(rates) > len(candidate_prices):
        raise ConfigError(f"at most {len(candidate_prices)} candidate models in an adversarial pool")
    rng = np.random.default_rng(seed)
    n_models = len(rates) + 1
    agree = np.zeros((n_items, n_models), dtype=bool)
    for j, rate in enumerate(rates):
        agree[rng.choice(n_items, int(round(rate * n_items)), replace=False), j] = True
    agree[:, -1] = True
    prices = np.array([*candidate_prices[: len(rates)], ADVERSARIAL_REFERENCE_PRICE])
    cost = np.broadcast_to(prices, (n_items, n_models)).copy()
    models = tuple(f"cand-{p:g}" for p in prices[:-1]) + ("reference",)
    score = synthetic_scores(agree, rng)
    score[:, -1] = np.nan
    return Batch(models, agree, cost, score)


ROUTING_PRICES = (5.0, 20.0)  # head, reference: the head a quarter of the reference's price
ROUTING_HARD_SHARE = 0.15  # items the head always gets wrong and the predictor flags


def routing_batch(n_items: int, target: float, seed: int, below: float = 0.0) -> tuple[Batch, np.ndarray]:
    """A batch for cascade routing at the edge, and the router's predicted agreement (items x models).

    A ``ROUTING_HARD_SHARE`` of the items is hard: the head never agrees there, scores them low, and the
    predictor says so (predicted agreement 0.02, against 0.9 elsewhere). On the other items the head's
    wrong answers are exactly as many as the batch may hold at ``target`` (plus ``below`` × N: 0.005 puts
    the batch half a point below the target), placed at random, with barely informative scores (separation
    0.3): with the hard items answered by the reference, keeping every other item's answer lands exactly at
    T (or below it), the case where the certificate must stop in time.
    """
    from smartmix.policies import Guarantee

    rng = np.random.default_rng(seed)
    hard = np.zeros(n_items, dtype=bool)
    hard[rng.choice(n_items, int(round(ROUTING_HARD_SHARE * n_items)), replace=False)] = True
    allowed = n_items - Guarantee(target).required_agreeing(n_items)
    easy = np.flatnonzero(~hard)
    wrong = min(len(easy), allowed + int(round(below * n_items)))
    head = ~hard
    head[rng.choice(easy, wrong, replace=False)] = False
    agree = np.stack([head, np.ones(n_items, dtype=bool)], axis=1)
    cost = np.broadcast_to(np.array(ROUTING_PRICES), (n_items, 2)).copy()
    score = synthetic_scores(agree, rng, separation=0.3)
    score[hard, 0] = 0.05 * rng.random(hard.sum())  # the head is unsure where it always fails
    score[:, -1] = np.nan
    predicted = np.stack([np.where(hard, 0.02, 0.9), np.full(n_items, np.nan)], axis=1)
    return Batch(("head", "reference"), agree, cost, score), predicted


# ---------------------------------------------------------------------------------------------------
# Large pools

# Twelve models, cheapest first by list price, the reference last: real names, list prices read from
# genai-prices' bundled snapshot when the pool is built (per token; the report prints them).
LARGE_POOL = (
    "gemini-2.0-flash-lite",
    "gpt-4.1-nano",
    "gpt-4o-mini",
    "mistral-small-latest",
    "claude-3-haiku-20240307",
    "deepseek-chat",
    "gemini-2.5-flash",
    "gpt-4.1-mini",
    "claude-3-5-haiku-latest",
    "o3-mini",
    "gpt-4.1",
    "claude-sonnet-4-0",
)
# Eight more, for pools of up to 20 models (sorted in among the candidates by price).
EXTRA_POOL = (
    "gpt-5-nano",
    "gemini-1.5-flash",
    "command-r",
    "grok-3-mini",
    "gpt-5-mini",
    "o4-mini",
    "gemini-2.5-pro",
    "mistral-large-latest",
)
MAX_POOL = len(LARGE_POOL) + len(EXTRA_POOL)
POOL_RATES = (0.70, 0.93)  # agreement of the cheapest and of the dearest candidate; linear in between
POOL_CORRELATION = 0.6  # weight of the shared item difficulty in each model's agreement
POOL_TOKENS = (400.0, 20.0)  # median input and output tokens per item (log-normal spread per item)


@cache
def pool_prices(models: tuple[str, ...] = LARGE_POOL) -> np.ndarray:
    """(input, output) USD per token of each model, from genai-prices; an error naming a model it lacks."""
    from smartmix.models import lookup_price

    prices = []
    for m in models:
        found = lookup_price(m)
        if found is None:
            raise ConfigError(f"genai-prices has no price for '{m}' (large-pool benchmark)")
        prices.append(found)
    return np.asarray(prices, dtype=float)


def pool_models(n_models: int) -> tuple[str, ...]:
    """The models of an ``n_models`` pool, candidates cheapest first (typical item), the reference last: the
    first ``n_models - 1`` candidates of :data:`LARGE_POOL`, then :data:`EXTRA_POOL` sorted in by price."""
    if not 2 <= n_models <= MAX_POOL:
        raise ConfigError(f"a large pool has 2 to {MAX_POOL} models, got {n_models}")
    candidates = [*LARGE_POOL[:-1], *EXTRA_POOL][: n_models - 1]
    prices = pool_prices(tuple(candidates))
    typical = prices @ np.array(POOL_TOKENS)
    return (*(candidates[j] for j in np.argsort(typical, kind="stable")), LARGE_POOL[-1])


def pool_batch(n_items: int, seed: int, n_models: int = len(LARGE_POOL)) -> Batch:
    """A synthetic pool of ``n_models`` real-priced models (:func:`pool_models`): per-item token counts,
    correlated agreement (a shared item difficulty), and a synthetic score per candidate. Candidate j agrees
    at rate ``POOL_RATES`` interpolated by its rank."""
    from statistics import NormalDist

    models = pool_models(n_models)
    prices = pool_prices(tuple(models))
    rng = np.random.default_rng(seed)
    k = n_models - 1
    rates = np.linspace(POOL_RATES[0], POOL_RATES[1], k) if k > 1 else np.array([POOL_RATES[1]])
    cut = np.array([NormalDist().inv_cdf(float(r)) for r in rates])
    rho = POOL_CORRELATION
    latent = rho * rng.standard_normal((n_items, 1)) + np.sqrt(1 - rho**2) * rng.standard_normal((n_items, k))
    agree = np.ones((n_items, n_models), dtype=bool)
    agree[:, :k] = latent < cut
    tokens_in = POOL_TOKENS[0] * rng.lognormal(0.0, 0.3, n_items)
    tokens_out = POOL_TOKENS[1] * rng.lognormal(0.0, 0.5, (n_items, n_models))
    cost = tokens_in[:, None] * prices[:, 0] + tokens_out * prices[:, 1]
    score = synthetic_scores(agree, rng)
    score[:, -1] = np.nan
    return Batch(models, agree, cost, score)


# ---------------------------------------------------------------------------------------------------
# The SMART paper's simulator


def simulated_batch(profile: str, seed: int, n_items: int | None = None) -> Batch:
    """A batch of the paper's simulator, columns reordered: candidates cheapest first (cost per item), the
    reference (gpt-4) last — the order :func:`smartmix.core.offline.simulate` expects."""
    from smartmix.backends.simulated import PAPER_PROFILES, simulated_arrays

    arrays = simulated_arrays(profile, seed, n_items)
    ref = arrays.index(PAPER_PROFILES[profile].reference)
    cands = sorted((j for j in range(len(arrays.models)) if j != ref), key=lambda j: float(arrays.cost[0, j]))
    cols = [*cands, ref]
    return Batch(tuple(arrays.models[j] for j in cols), arrays.agree[:, cols], arrays.cost[:, cols], None)
