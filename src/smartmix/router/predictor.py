"""Routoo-style performance predictor: P(model agrees with the reference | prompt), without calling a model.

Features are the prompt's sentence embedding (``all-MiniLM-L6-v2``, see :mod:`.embedding`) or hashed
lexical features, plus a few cheap text statistics. Each non-reference model gets its own L2-regularised
logistic regression, with the regularisation chosen by cross-validated log-loss. Its out-of-fold logits
then fit a Platt recalibration ``a * logit + b`` with ``0 <= a <= 1``: a weak head is shrunk toward the
model's training agreement rate, and a head whose out-of-fold ranking carries no signal becomes that
constant rate.

Only models on the upper concave hull of (mean cost, training agreement rate), with the reference at
agreement 1, are *routable*: a model below that hull is beaten, at its own price, by a random mix of its
hull neighbours, so :meth:`AgreementPredictor.predict` leaves it out unless asked for every model. With an
uninformative predictor the selectors then reproduce the best random mix of the hull models instead of
paying for dominated ones.

Fitting needs scikit-learn; prediction, saving and loading are plain numpy (one ``.npz`` file, no pickle).
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smartmix.errors import ConfigError, DataError, MissingExtraError, UnknownModelError
from smartmix.stats import auroc
from smartmix.tasks import normalize_answer as _normalize
from smartmix.tasks import read_jsonl

from .embedding import EMBEDDERS, Embedder, _blas_threads
from .selector import cost_agreement_hull

__all__ = [
    "AgreementPredictor",
    "RecordedSet",
    "agreement_matrix",
    "cheap_features",
    "normalize_answer",
    "platt_shrink",
    "read_recorded",
    "train_from_recorded",
]

FORMAT = "smartmix.router.AgreementPredictor"
FORMAT_VERSION = 2
CHEAP_FEATURE_NAMES = (
    "log_chars",
    "log_words",
    "digit_frac",
    "upper_frac",
    "punct_frac",
    "nonascii_frac",
    "math_frac",
    "log_lines",
    "log_max_word",
)
_MATH_CHARS = set("=+-*/^<>%$\\|_{}()[]")


# --------------------------------------------------------------------------------------------------
# Recorded outputs (read with the project's JSONL reader and answer normalisation).


def normalize_answer(answer: object) -> str | None:
    """The project's one normalisation (:func:`smartmix.tasks.normalize_answer`); ``None`` stays ``None``."""
    return None if answer is None else _normalize(str(answer))


@dataclass
class RecordedSet:
    """Recorded outputs of several models on the same items (one JSONL file, or several concatenated).

    ``answers[m][i]`` is model m's answer on item i (``None`` where not recorded); ``cost_usd`` and
    ``confidence`` hold NaN where missing.
    """

    ids: list[str]
    prompts: list[str]
    systems: list[str | None]
    models: list[str]
    answers: dict[str, list[str | None]]
    cost_usd: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]
    source: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def mean_costs(self) -> dict[str, float]:
        """Mean recorded cost per request for each model (NaN where it has no cost)."""
        out = {}
        for m in self.models:
            c = self.cost_usd[m]
            out[m] = float(np.nanmean(c)) if np.isfinite(c).any() else math.nan
        return out

    def default_reference(self) -> str:
        """The priciest model by mean recorded cost; the last listed model if costs are missing."""
        costs = self.mean_costs()
        known = {m: c for m, c in costs.items() if math.isfinite(c)}
        if known:
            return max(known, key=lambda m: (known[m], self.models.index(m)))
        return self.models[-1]


def read_recorded(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> RecordedSet:
    """Read recorded-outputs JSONL (``id``, ``prompt``, ``system``, ``outputs[model].answer/cost_usd/...``)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    rows: list[dict] = []
    sources: list[str] = []
    for p in paths:
        path = Path(p)
        for lineno, row in read_jsonl(path):
            if "prompt" not in row or not isinstance(row.get("outputs"), dict):
                raise DataError(f"{path}, line {lineno}: needs 'id', 'prompt' and an 'outputs' object.")
            rows.append(row)
            sources.append(str(path))
    if not rows:
        raise DataError(f"No items in {', '.join(str(p) for p in paths)}.")
    models: list[str] = []
    for row in rows:
        for m in row["outputs"]:
            if m not in models:
                models.append(m)
    n = len(rows)
    answers: dict[str, list[str | None]] = {m: [None] * n for m in models}
    cost = {m: np.full(n, np.nan) for m in models}
    conf = {m: np.full(n, np.nan) for m in models}
    for i, row in enumerate(rows):
        for m, out in row["outputs"].items():
            if not isinstance(out, dict):
                continue
            ans = out.get("answer")
            answers[m][i] = None if ans is None else str(ans)
            for key, target in (("cost_usd", cost), ("confidence", conf)):
                v = out.get(key)
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    target[m][i] = float(v)
    return RecordedSet(
        ids=[str(r.get("id", i)) for i, r in enumerate(rows)],
        prompts=[str(r["prompt"]) for r in rows],
        systems=[None if r.get("system") is None else str(r["system"]) for r in rows],
        models=models,
        answers=answers,
        cost_usd=cost,
        confidence=conf,
        source=sources,
    )


def agreement_matrix(data: RecordedSet, reference: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per model, 1.0 where its normalised answer equals the reference's; plus a mask of usable items.

    Items without a reference answer are unusable (mask False). A missing model answer counts as a
    disagreement.
    """
    if reference not in data.answers:
        raise UnknownModelError(
            f"Reference '{reference}' is not in the recorded outputs ({', '.join(data.models)})."
        )
    ref = [normalize_answer(a) for a in data.answers[reference]]
    usable = np.array([r is not None for r in ref])
    agree = {}
    for m in data.models:
        norm = [normalize_answer(a) for a in data.answers[m]]
        agree[m] = np.array(
            [a is not None and r is not None and a == r for a, r in zip(norm, ref, strict=True)], float
        )
    return agree, usable


# --------------------------------------------------------------------------------------------------
# Features.

_WORD_RE = re.compile(r"\S+")


def cheap_features(prompts: Sequence[str]) -> np.ndarray:
    """A few length/character statistics per prompt, shape [n, len(CHEAP_FEATURE_NAMES)]."""
    out = np.zeros((len(prompts), len(CHEAP_FEATURE_NAMES)), dtype=np.float64)
    for i, text in enumerate(prompts):
        n = max(len(text), 1)
        words = _WORD_RE.findall(text)
        out[i] = (
            math.log1p(len(text)),
            math.log1p(len(words)),
            sum(c.isdigit() for c in text) / n,
            sum(c.isupper() for c in text) / n,
            sum(unicodedata.category(c).startswith("P") for c in text) / n,
            sum(ord(c) > 127 for c in text) / n,
            sum(c in _MATH_CHARS for c in text) / n,
            math.log1p(text.count("\n")),
            math.log1p(max((len(w) for w in words), default=0)),
        )
    return out


# --------------------------------------------------------------------------------------------------
# Predictor.

_DEFAULT_CS = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)


def _fit_head(
    Z: np.ndarray, y: np.ndarray, Cs: Sequence[float], cv: int, random_state: int
) -> tuple[np.ndarray, float, float, np.ndarray | None]:
    """Logistic head with C picked by stratified ``cv``-fold log-loss: (coef, intercept, C, out-of-fold p).

    With fewer than two examples of a class, a smoothed constant rate (coef 0, C reported as 0, no
    out-of-fold predictions).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    k, total = int(y.sum()), int(y.size)
    minority = min(k, total - k)
    if minority < 2:
        return np.zeros(Z.shape[1]), math.log((k + 1) / (total - k + 1)), 0.0, None
    folds = min(cv, minority)
    best_c, best_loss, best_p = Cs[0], math.inf, None
    if folds >= 2:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
        for c in Cs:
            clf = LogisticRegression(C=c, max_iter=2000)
            p = cross_val_predict(clf, Z, y, cv=splitter, method="predict_proba")[:, 1]
            p = np.clip(p, 1e-6, 1 - 1e-6)
            loss = -np.mean(y * np.log(p) + (~y) * np.log(1 - p))
            if loss < best_loss - 1e-9:
                best_c, best_loss, best_p = c, loss, p
    clf = LogisticRegression(C=best_c, max_iter=2000).fit(Z, y)
    return clf.coef_[0].copy(), float(clf.intercept_[0]), float(best_c), best_p


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def platt_shrink(logits: np.ndarray, y: np.ndarray, grid: int = 41) -> tuple[float, float]:
    """Recalibration ``a * logit + b`` with ``a`` in [0, 1], by log-loss on (out-of-fold) ``logits``.

    ``a = 0`` (the constant agreement rate) when the logits rank the labels no better than chance;
    ``a < 1`` shrinks over-confident heads toward the rate. Returns ``(a, b)``.
    """
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    rate = float(np.clip(t.mean(), 1e-6, 1 - 1e-6))
    best = (math.inf, 0.0, math.log(rate / (1 - rate)))
    for a in np.linspace(0.0, 1.0, grid):
        b = math.log(rate / (1 - rate)) - a * float(x.mean())
        for _ in range(50):  # Newton on the intercept (convex in b)
            p = 1.0 / (1.0 + np.exp(-np.clip(a * x + b, -50, 50)))
            grad, hess = float((p - t).sum()), float((p * (1 - p)).sum())
            if hess < 1e-12:
                break
            step = grad / hess
            b -= step
            if abs(step) < 1e-10:
                break
        p = np.clip(1.0 / (1.0 + np.exp(-np.clip(a * x + b, -50, 50))), 1e-12, 1 - 1e-12)
        loss = -float(np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))
        if loss < best[0] - 1e-12:
            best = (loss, float(a), float(b))
    return best[1], best[2]


class AgreementPredictor:
    """P(model's answer agrees with the reference's | prompt), one logistic head per non-reference model.

    ``predict`` returns ``{model: probabilities}`` for every model seen in ``fit``; the reference gets 1.0.
    ``embedder`` defaults to :class:`Embedder` (loaded lazily on the first prompt to embed).
    ``Cs``: inverse regularisation strengths tried per model by ``cv``-fold cross-validated log-loss.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        use_cheap_features: bool = True,
        Cs: Sequence[float] = _DEFAULT_CS,
        cv: int = 5,
        random_state: int = 0,
    ):
        self._embedder = embedder
        self.use_cheap_features = use_cheap_features
        self.Cs = tuple(float(c) for c in Cs)
        self.cv = cv
        self.random_state = random_state
        self.reference: str | None = None
        self.models: list[str] = []
        self.costs: dict[str, float] = {}
        self.n_train: dict[str, int] = {}
        self.chosen_C: dict[str, float] = {}
        self.rates: dict[str, float] = {}  # training agreement rate per model (reference: 1.0)
        self.calibration: dict[str, tuple[float, float]] = {}  # head -> (a, b): logit' = a * logit + b
        self.oof_auroc: dict[str, float] = {}  # out-of-fold AUROC of each head on the training prompts
        self.routable: list[str] = []  # models on the cost-agreement hull (the ones predict() returns)
        self.embedding_model: str = (embedder or Embedder).name
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._coef: np.ndarray | None = None  # [heads, features]
        self._intercept: np.ndarray | None = None  # [heads]
        self._heads: list[str] = []

    # -- features -----------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder()
        return self._embedder

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        return self.embedder.encode(prompts)

    def features(self, prompts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """Raw (unscaled) feature matrix: embedding, then the cheap features if enabled."""
        if isinstance(prompts, str):
            raise TypeError("pass a sequence of prompts; wrap a single prompt in a list")
        if embeddings is None:
            embeddings = self.embed(prompts)
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(prompts):
            raise ValueError(f"embeddings must have shape [{len(prompts)}, dim], got {embeddings.shape}")
        if not self.use_cheap_features:
            return embeddings
        return np.hstack([embeddings, cheap_features(prompts)])

    # -- training -----------------------------------------------------------------------------------

    def fit(
        self,
        prompts: Sequence[str],
        agree: Mapping[str, np.ndarray | Sequence[float]],
        reference: str,
        *,
        embeddings: np.ndarray | None = None,
        costs: Mapping[str, float] | None = None,
    ) -> AgreementPredictor:
        """Fit one head per model in ``agree`` other than ``reference``.

        ``agree[m][i]`` is 1 where model m agreed with the reference on prompt i, 0 where not, NaN where
        unknown (left out of m's training set). ``costs`` (per-request price per model) is stored for the
        selectors; :func:`train_from_recorded` fills it from the recorded fees.
        """
        try:
            import sklearn  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingExtraError("Training the router's predictor", "router", "scikit-learn") from exc

        n = len(prompts)
        if n == 0:
            raise DataError("Cannot fit the router's predictor on zero prompts.")
        heads = [m for m in agree if m != reference]
        if not heads:
            raise ConfigError("The router needs at least one model besides the reference to predict.")
        labels = {}
        for m in heads:
            y = np.asarray(agree[m], dtype=np.float64)
            if y.shape != (n,):
                raise DataError(f"agree['{m}'] has shape {y.shape}; expected ({n},), one value per prompt.")
            labels[m] = y
        X = self.features(prompts, embeddings)
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-12] = 1.0
        Z = (X - mean) / scale

        coef = np.zeros((len(heads), Z.shape[1]))
        intercept = np.zeros(len(heads))
        chosen_C, n_train, rates, calibration, oof_auroc = {}, {}, {}, {}, {}
        with _blas_threads(
            1, rescan=True
        ):  # small problems: one BLAS thread is faster, much faster on a busy machine
            for h, m in enumerate(heads):
                known = np.isfinite(labels[m])
                y = labels[m][known] > 0.5
                n_train[m] = int(known.sum())
                rates[m] = float(y.mean()) if y.size else math.nan
                coef[h], intercept[h], chosen_C[m], oof = _fit_head(
                    Z[known], y, self.Cs, self.cv, self.random_state
                )
                if oof is None:
                    calibration[m], oof_auroc[m] = (1.0, 0.0), math.nan
                else:
                    calibration[m] = platt_shrink(_logit(oof), y)
                    oof_auroc[m] = auroc(y, oof)
        self.reference = reference
        self.models = [*heads, reference] if reference not in agree else list(agree)
        self.costs = {m: float(c) for m, c in (costs or {}).items()}
        self.chosen_C, self.n_train = chosen_C, n_train
        self.rates = {**rates, reference: 1.0}
        self.calibration, self.oof_auroc = calibration, oof_auroc
        self.routable = self.hull_models()
        self._heads = heads
        self._mean, self._scale, self._coef, self._intercept = mean, scale, coef, intercept
        return self

    def hull_models(self, costs: Mapping[str, float] | None = None) -> list[str]:
        """Models on the upper concave hull of (mean cost, training agreement rate), cheapest first.

        ``costs`` default to the training prices (:attr:`costs`); without a price for every model, every
        model is kept. The reference is always kept (agreement 1 with itself).
        """
        costs = self.costs if costs is None else costs
        if self.reference is None:
            return []
        if any(m not in costs or not math.isfinite(float(costs[m])) for m in self.models):
            return list(self.models)
        rates = {m: (1.0 if m == self.reference else self.rates.get(m, math.nan)) for m in self.models}
        if any(not math.isfinite(r) for r in rates.values()):
            return list(self.models)
        return cost_agreement_hull(rates, {m: float(costs[m]) for m in self.models}, self.reference)

    # -- inference ----------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if self._coef is None or self.reference is None:
            raise ConfigError(
                "The router's predictor is not trained: call fit() or AgreementPredictor.load()."
            )

    def predict(
        self,
        prompts: Sequence[str],
        *,
        embeddings: np.ndarray | None = None,
        all_models: bool = False,
        calibrated: bool = True,
    ) -> dict[str, np.ndarray]:
        """``{model: P(agrees with reference)}`` per prompt; the reference gets 1.0.

        By default only the routable models (:attr:`routable`: on the cost-agreement hull of the training
        data) are returned, so that a selector never picks a dominated model; ``all_models=True`` returns
        every model seen in training. ``calibrated=False`` skips the out-of-fold recalibration.
        """
        self._check_fitted()
        assert self._mean is not None and self._scale is not None and self._intercept is not None
        names = self.models if all_models or not self.routable else self.routable
        n = len(prompts)
        if n == 0:
            return {m: np.zeros(0) for m in names}
        X = self.features(prompts, embeddings)
        if X.shape[1] != self._mean.shape[0]:
            raise DataError(
                f"The predictor was trained on {self._mean.shape[0]} features per prompt, got {X.shape[1]}: "
                "embeddings from another model or settings? Retrain it."
            )
        Z = (X - self._mean) / self._scale
        logits = Z @ self._coef.T + self._intercept  # [n, heads]
        out = {}
        for h, m in enumerate(self._heads):
            z = logits[:, h]
            if calibrated:
                a, b = self.calibration.get(m, (1.0, 0.0))
                z = a * z + b
            out[m] = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        out[self.reference] = np.ones(n)
        return {m: out[m] for m in names}

    def predict_one(self, prompt: str, *, all_models: bool = False) -> dict[str, float]:
        return {m: float(p[0]) for m, p in self.predict([prompt], all_models=all_models).items()}

    # -- persistence --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trained predictor to one ``.npz`` file (arrays + JSON metadata; no pickle)."""
        self._check_fitted()
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "reference": self.reference,
            "models": self.models,
            "heads": self._heads,
            "costs": self.costs,
            "n_train": self.n_train,
            "chosen_C": self.chosen_C,
            "rates": self.rates,
            "calibration": {m: list(ab) for m, ab in self.calibration.items()},
            "oof_auroc": {m: (None if math.isnan(v) else v) for m, v in self.oof_auroc.items()},
            "routable": self.routable,
            "use_cheap_features": self.use_cheap_features,
            "cheap_feature_names": list(CHEAP_FEATURE_NAMES) if self.use_cheap_features else [],
            "embedding_model": self.embedding_model,
            "embedding_dim": int(
                self._coef.shape[1] - (len(CHEAP_FEATURE_NAMES) if self.use_cheap_features else 0)
            ),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            meta=np.array(json.dumps(meta)),
            mean=self._mean,
            scale=self._scale,
            coef=self._coef,
            intercept=self._intercept,
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, embedder: Embedder | None = None) -> AgreementPredictor:
        """Read a file written by :meth:`save` (milliseconds; the embedder still loads lazily)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: np.array(z[k]) for k in ("mean", "scale", "coef", "intercept")}
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(
                f"Cannot read router predictor {path}: {exc}. Retrain it or check the path."
            ) from exc
        if meta.get("format") != FORMAT or meta.get("version") not in (1, FORMAT_VERSION):
            raise DataError(
                f"{path} is not a router predictor of format {FORMAT} v{FORMAT_VERSION} "
                f"(found {meta.get('format')} v{meta.get('version')}). Retrain it with this smartmix version."
            )
        kind = EMBEDDERS.get(meta.get("embedding_model"))
        if kind is None:
            raise DataError(
                f"{path} was trained on '{meta.get('embedding_model')}' features, unknown here "
                f"(known: {', '.join(EMBEDDERS)}). Retrain it with this smartmix version."
            )
        self = cls(embedder or kind(), use_cheap_features=bool(meta["use_cheap_features"]))
        self.reference = meta["reference"]
        self.models = list(meta["models"])
        self._heads = list(meta["heads"])
        self.costs = {k: float(v) for k, v in meta["costs"].items()}
        self.n_train = {k: int(v) for k, v in meta["n_train"].items()}
        self.chosen_C = {k: float(v) for k, v in meta["chosen_C"].items()}
        # version 1 files: no recalibration, every model routable
        self.rates = {k: float(v) for k, v in meta.get("rates", {}).items()}
        self.calibration = {k: (float(v[0]), float(v[1])) for k, v in meta.get("calibration", {}).items()}
        self.oof_auroc = {
            k: (math.nan if v is None else float(v)) for k, v in meta.get("oof_auroc", {}).items()
        }
        self.routable = list(meta.get("routable") or self.models)
        self._mean, self._scale = arrays["mean"], arrays["scale"]
        self._coef, self._intercept = arrays["coef"], arrays["intercept"]
        return self


def train_from_recorded(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    reference: str | None = None,
    *,
    predictor: AgreementPredictor | None = None,
    embeddings: np.ndarray | None = None,
) -> AgreementPredictor:
    """Fit an :class:`AgreementPredictor` on recorded outputs (JSONL files of one model pool).

    ``reference`` defaults to the priciest model. Items without a reference answer are skipped. Stores the
    mean recorded cost per request of each model in ``predictor.costs``. ``embeddings`` (optional) are the
    prompt embeddings of all items in file order, to reuse a cache.
    """
    data = read_recorded(paths)
    if reference is None:
        reference = data.default_reference()
    agree, usable = agreement_matrix(data, reference)
    if not usable.any():
        raise DataError(f"No item has an answer from the reference '{reference}'.")
    prompts = [p for p, u in zip(data.prompts, usable, strict=True) if u]
    labels = {m: a[usable] for m, a in agree.items()}
    for m in data.models:  # a model without an answer on an item: unknown there, not a disagreement
        missing = np.array([a is None for a in data.answers[m]])[usable]
        labels[m][missing] = np.nan
    if embeddings is not None:
        embeddings = np.asarray(embeddings)[usable]
    costs = {m: c for m, c in data.mean_costs().items() if math.isfinite(c)}
    predictor = predictor or AgreementPredictor()
    return predictor.fit(prompts, labels, reference, embeddings=embeddings, costs=costs)
