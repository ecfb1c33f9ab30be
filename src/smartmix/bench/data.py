"""What the benchmarks run on: recorded datasets, bootstrap batches, synthetic adversarial pools, seeds.

Every batch is a pure function of its seed, so any trial can be rerun on its own from the seed printed in
the report (:func:`trial_seed` derives it from the base seed, the setting and the trial number).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smartmix.errors import ConfigError, DataError

__all__ = [
    "Batch",
    "BenchData",
    "adversarial_batch",
    "adversarial_rates",
    "bootstrap_batch",
    "default_data_paths",
    "find_data_files",
    "load_dataset",
    "simulated_batch",
    "trial_seed",
]

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
    """One recorded dataset, as arrays ready to be resampled."""

    name: str
    path: str
    models: tuple[str, ...]
    agree: np.ndarray
    cost: np.ndarray
    confidence: np.ndarray

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


def load_dataset(path: Path, name: str | None = None, comparator=None) -> BenchData:
    """Load a recorded-outputs file; models ordered cheapest first by mean recorded cost, the reference last.

    Agreement is judged by ``comparator`` (default: exact match after normalisation).
    """
    from smartmix.backends.replay import RecordedOutputs
    from smartmix.tasks import ExactComparator

    recorded = RecordedOutputs.load(path)
    reference = recorded.default_reference()
    models = recorded.pool(reference).names
    if len(models) < 2:
        raise DataError(f"{path}: a benchmark needs at least one model besides the reference ({reference})")
    arrays = recorded.arrays(models, reference, comparator or ExactComparator())
    return BenchData(
        name=name or dataset_name(Path(path)),
        path=str(path),
        models=tuple(arrays.models),
        agree=arrays.agree,
        cost=arrays.cost,
        confidence=arrays.confidence,
    )


def bootstrap_batch(data: BenchData, n_items: int, seed: int) -> Batch:
    """``n_items`` items drawn with replacement from the dataset: the joint per-item behaviour stays real."""
    rows = np.random.default_rng(seed).integers(0, data.n_items, n_items)
    from smartmix.scores import score_from_logprob

    return Batch(data.models, data.agree[rows], data.cost[rows], score_from_logprob(data.confidence[rows]))


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


def adversarial_batch(n_items: int, rates: Sequence[float], seed: int) -> Batch:
    """A synthetic pool: candidate j agrees on exactly round(rates[j] * n) items placed at random.

    Prices are 1, 2, 4, 8 per call for the candidates and 20 for the reference. Every candidate also gets a
    synthetic confidence score (:func:`synthetic_scores`), so score-based methods run on the same pools.
    """
    if len(rates) > len(ADVERSARIAL_PRICES):
        raise ConfigError(f"at most {len(ADVERSARIAL_PRICES)} candidate models in an adversarial pool")
    rng = np.random.default_rng(seed)
    n_models = len(rates) + 1
    agree = np.zeros((n_items, n_models), dtype=bool)
    for j, rate in enumerate(rates):
        agree[rng.choice(n_items, int(round(rate * n_items)), replace=False), j] = True
    agree[:, -1] = True
    prices = np.array([*ADVERSARIAL_PRICES[: len(rates)], ADVERSARIAL_REFERENCE_PRICE])
    cost = np.broadcast_to(prices, (n_items, n_models)).copy()
    models = tuple(f"cand-{p:g}" for p in prices[:-1]) + ("reference",)
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
