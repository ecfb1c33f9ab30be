"""Evaluate the per-prompt router (Routoo-style predictor + selectors) on the shared recorded outputs.

For each set: train the predictor on ``train.jsonl``, score on ``test.jsonl`` (never trained on), and trace
cost-agreement curves on the test split for

* ``router-threshold``: cheapest routable model with predicted agreement >= theta (theta swept); routable
  models are those on the upper hull of (mean cost, agreement rate) on the *train* split, predictions are
  recalibrated on train out-of-fold predictions (see :mod:`smartmix.router.predictor`);
* ``router-budget``: argmax p - lambda*cost, lambda tuned per budget on out-of-fold predictions of the
  *train* split (no test information); budgets are shares of the reference-only cost, swept from the
  cheapest model's share to 1 (prices relative to the reference's, from the train split);
* the same two with hashed lexical features (``[hashing]``), a predictor trained on the train splits of
  every set with the same pool (``router-pooled``), and the ablation ``router-threshold[all models]``
  (every model routable, uncalibrated heads);
* ``random``: the cheapest model mixed at random with the reference (RouteLLM's random baseline; APGR 0.5);
* ``lp-mix``: the best random mix of any models, knowing their true test agreement (hindsight; what
  SMART's model mix can reach with free, perfect profiling);
* ``cascade``: the cheapest model keeps its answer when its recorded ``confidence`` >= tau, else the
  reference is called too (margin-style two-tier; tau swept);
* each single model, and the per-item hindsight ``oracle`` (cheapest agreeing model).

Metrics (RouteLLM-style, on the agreement axis): PGR = (agreement - a_cheapest) / (1 - a_cheapest) against
normalised cost x = (cost - c_cheapest) / (c_reference - c_cheapest); each method's curve is its Pareto
front joined by straight lines (a random choice between two operating points reaches any point between
them), with (0, 0), the cheapest model alone, always available. APGR = area
under that envelope over x in [0, 1]; CPT(50%) = smallest x with PGR >= 0.5 (also given as a share of the
reference-only cost). "Router >= random at every cost" is checked on the 1001-point grid of x against the
sampling s.d. of random routing (``vs_random.csv``). Also: AUROC/Brier/ECE of each model's predicted
agreement on test, savings at target agreements (hindsight operating point on each method's front), and
router latency on CPU for each feature kind.

Writes CSV, Markdown and PNG files to ``benchmarks/results/router/`` and prints the summary.
Prompt embeddings are cached outside the repository (``~/.cache/smartmix/router-embeddings``).

    smartmix bench --suite router                         # all six sets (``--quick``: hashed features only)
    python benchmarks/router_eval.py --sets mmlu-qwen-oai --skip-latency   # every option
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from smartmix.router import (
    AgreementPredictor,
    Embedder,
    HashingEmbedder,
    agreement_matrix,
    cost_agreement_hull,
    read_recorded,
    select_budget,
    select_threshold,
    train_from_recorded,
    tune_lambda,
)
from smartmix.stats import auroc

DEFAULT_DATA = Path(os.environ.get("SMARTMIX_DATA", Path("..") / "shared" / "data"))
DEFAULT_OUT = Path("benchmarks") / "results" / "router"
DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smartmix" / "router-embeddings"
)
SETS = (
    "mmlu-qwen-oai",
    "mmlu-llama",
    "medmcqa-qwen-oai",
    "medmcqa-llama",
    "triviaqa-qwen-oai",
    "triviaqa-llama",
)
TARGETS = (0.8, 0.9, 0.95)
GRID = np.linspace(0.0, 1.0, 1001)


# --------------------------------------------------------------------------------------------------
# Embedding cache (keyed by model name + text; lives outside the repository).


class EmbeddingCache:
    def __init__(self, directory: Path | None, embedder: Embedder):
        self.embedder = embedder
        self.path = None if directory is None else directory / f"{embedder.name}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            with np.load(self.path, allow_pickle=False) as z:
                for k, v in zip(z["keys"].tolist(), z["emb"], strict=True):
                    self.vectors[k] = v
        self.computed = 0
        self.seconds = 0.0

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}.items())
        if todo:
            t0 = time.perf_counter()
            emb = self.embedder.encode([t for _, t in todo])
            self.seconds += time.perf_counter() - t0
            self.computed += len(todo)
            for (k, _), v in zip(todo, emb, strict=True):
                self.vectors[k] = v
            self._save()
        return (
            np.stack([self.vectors[k] for k in keys])
            if keys
            else np.zeros((0, self.embedder.dim), np.float32)
        )

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), emb=np.stack([self.vectors[k] for k in keys]))
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------------------------------
# Metrics.


def pareto(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Operating points no cheaper point beats, plus (0, 0) (the cheapest model alone), sorted by cost."""
    x = np.append(np.asarray(x, float), 0.0)
    y = np.append(np.asarray(y, float), 0.0)
    order = np.lexsort((-y, x))
    xs, ys = x[order], y[order]
    keep = np.r_[True, ys[1:] > np.maximum.accumulate(ys)[:-1]]
    return xs[keep], ys[keep]


def envelope(x: np.ndarray, y: np.ndarray, grid: np.ndarray = GRID) -> np.ndarray:
    """Best PGR reachable at each normalised cost: the Pareto points joined by straight lines (any point
    between two operating points is reached by choosing between them at random), flat after the last."""
    xs, ys = pareto(x, y)
    return np.interp(grid, xs, ys, left=0.0, right=ys[-1])


def apgr_cpt(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    env = envelope(x, y)
    apgr = float(np.trapezoid(env, GRID))
    hit = np.nonzero(env >= 0.5 - 1e-12)[0]
    return apgr, (float(GRID[hit[0]]) if hit.size else math.nan)


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(total)


# --------------------------------------------------------------------------------------------------
# One set.


def out_of_fold(
    prompts: list[str],
    labels: dict[str, np.ndarray],
    reference: str,
    emb: np.ndarray,
    k: int,
    seed: int,
    costs: dict[str, float],
    keep: Sequence[str],
    embedder=None,
) -> dict[str, np.ndarray]:
    """Out-of-fold predictions on the train split (each fold's model fitted like the real one), for ``keep``."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(prompts)) % k
    out = {m: np.zeros(len(prompts)) for m in keep}
    for f in range(k):
        tr, te = fold != f, fold == f
        sub = {m: v[tr] for m, v in labels.items()}
        model = AgreementPredictor(embedder=embedder).fit(
            [p for p, t in zip(prompts, tr, strict=True) if t],
            sub,
            reference,
            embeddings=emb[tr],
            costs=costs,
        )
        pred = model.predict(
            [p for p, t in zip(prompts, te, strict=True) if t], embeddings=emb[te], all_models=True
        )
        for m in out:
            out[m][te] = pred[m]
    return out


FEATURES = {"minilm": Embedder, "hashing": HashingEmbedder}


def gap_to_random(env_router: np.ndarray, env_random: np.ndarray, a_cheap: float, n: int) -> dict:
    """Router minus random on GRID, in agreement units, with the sampling s.d. of a random split.

    ``sigma(x)`` = sqrt(a(1-a) x(1-x) / n): the standard deviation of the test agreement that random routing
    of a share x of the n items to the reference realises (a: the cheapest model's test agreement).
    """
    gap = (env_router - env_random) * (1 - a_cheap)
    sigma = np.sqrt(a_cheap * (1 - a_cheap) * GRID * (1 - GRID) / n)
    i = int(np.argmin(gap))
    z = np.where(sigma > 0, gap / np.where(sigma > 0, sigma, 1.0), np.where(gap < -1e-12, -np.inf, 0.0))
    j = int(np.argmin(z))
    return {
        "min_gap": float(gap[i]),
        "min_gap_x": float(GRID[i]),
        "share_below": float(np.mean(gap < -1e-12)),
        "min_z": float(z[j]),
        "min_z_x": float(GRID[j]),
        "below_2sigma": int(np.sum(gap < -2 * sigma - 1e-12)),
    }


def evaluate_set(
    name: str,
    data_dir: Path,
    cache: EmbeddingCache,
    seed: int,
    pooled_sets: Sequence[str] = (),
    features: Sequence[str] = ("minilm", "hashing"),
) -> dict:
    t_start = time.perf_counter()
    train_path, test_path = data_dir / name / "train.jsonl", data_dir / name / "test.jsonl"
    tr, te = read_recorded(train_path), read_recorded(test_path)
    reference = tr.default_reference()
    a_tr, usable_tr = agreement_matrix(tr, reference)
    prompts_tr = [p for p, u in zip(tr.prompts, usable_tr, strict=True) if u]
    labels_tr = {m: a_tr[m][usable_tr] for m in tr.models}

    def embed(kind: str, texts: list[str]) -> np.ndarray:
        return cache.get(texts) if kind == "minilm" else FEATURES[kind]().encode(texts)

    predictors, emb_te_by = {}, {}
    fit_s = {}
    for kind in features:
        t0 = time.perf_counter()
        predictors[kind] = train_from_recorded(
            [train_path],
            reference,
            embeddings=embed(kind, tr.prompts),
            predictor=AgreementPredictor(FEATURES[kind]()),
        )
        fit_s[kind] = time.perf_counter() - t0
        emb_te_by[kind] = embed(kind, te.prompts)
    predictor = predictors[features[0]]
    prices = predictor.costs
    models = sorted(predictor.models, key=lambda m: prices[m])
    cheapest = models[0]

    a_te, usable = agreement_matrix(te, reference)
    keep = np.nonzero(usable)[0]
    prompts_te = [te.prompts[i] for i in keep]
    A = np.stack([a_te[m][keep] for m in models])  # [M, n] realised agreement on test
    C = np.stack([np.where(np.isfinite(te.cost_usd[m]), te.cost_usd[m], prices[m])[keep] for m in models])
    ref_i = models.index(reference)
    A[ref_i] = 1.0
    n = A.shape[1]
    cols = np.arange(n)

    c_cheap, c_ref = float(C[0].mean()), float(C[ref_i].mean())
    a_cheap = float(A[0].mean())

    def to_index(choices: np.ndarray) -> np.ndarray:
        lookup = {m: i for i, m in enumerate(models)}
        return np.fromiter((lookup[c] for c in choices), int, count=len(choices))

    def point_idx(idx: np.ndarray) -> tuple[float, float]:
        return float(C[idx, cols].mean()), float(A[idx, cols].mean())

    curves: dict[str, list[dict]] = {}

    def threshold_sweep(p: dict[str, np.ndarray]) -> list[dict]:
        allp = np.concatenate([p[m] for m in p if m != reference] or [np.zeros(1)])
        thetas = np.unique(np.concatenate([[0.0, 1.0 + 1e-9], np.quantile(allp, np.linspace(0, 1, 201))]))
        rows = []
        for th in thetas:
            cost, agr = point_idx(to_index(select_threshold(p, prices, float(th), reference=reference)))
            rows.append({"param": float(th), "cost": cost, "agreement": agr})
        return rows

    # Budgets are shares of the reference's cost (prices relative to the reference's): test prompts may be
    # longer or shorter than train prompts, which shifts every price alike but not the ratios.
    rel = {m: prices[m] / prices[reference] for m in models}
    shares = rel[cheapest] + np.linspace(0, 1, 41) * (1.0 - rel[cheapest])

    preds, preds_raw = {}, {}
    for kind in features:
        suffix = "" if kind == features[0] else f"[{kind}]"
        pk = predictors[kind]
        emb = emb_te_by[kind][keep]
        pred = pk.predict(prompts_te, embeddings=emb)  # routable models only
        preds[kind] = pk.predict(prompts_te, embeddings=emb, all_models=True)
        preds_raw[kind] = pk.predict(prompts_te, embeddings=emb, all_models=True, calibrated=False)
        # Router, threshold sweep.
        curves[f"router-threshold{suffix}"] = threshold_sweep(pred)
        if kind == features[0]:  # ablation: every model routable, uncalibrated (the selectors alone)
            curves["router-threshold[all models]"] = threshold_sweep(preds_raw[kind])
        # Router, budget sweep; lambda tuned on out-of-fold predictions of the train split.
        oof = out_of_fold(
            prompts_tr,
            labels_tr,
            reference,
            embed(kind, tr.prompts)[usable_tr],
            5,
            seed,
            prices,
            pk.routable,
            FEATURES[kind](),
        )
        rows = []
        for b in shares:
            lam = tune_lambda(oof, rel, float(b), reference=reference)
            cost, agr = point_idx(to_index(select_budget(pred, rel, lam=lam, reference=reference)))
            rows.append({"param": float(b), "lambda": lam, "cost": cost, "agreement": agr})
        curves[f"router-budget{suffix}"] = rows

    # Variant: trained on the train splits of every set with the same model pool (still no test item).
    pooled_paths = [data_dir / s / "train.jsonl" for s in pooled_sets]
    pred_pooled = None
    if len(pooled_paths) > 1:
        pooled_prompts = [p for path in pooled_paths for p in read_recorded(path).prompts]
        kind = features[0]
        pooled = train_from_recorded(
            pooled_paths,
            reference,
            embeddings=embed(kind, pooled_prompts),
            predictor=AgreementPredictor(FEATURES[kind]()),
        )
        emb = emb_te_by[kind][keep]
        curves["router-pooled"] = threshold_sweep(pooled.predict(prompts_te, embeddings=emb))
        pred_pooled = pooled.predict(prompts_te, embeddings=emb, all_models=True, calibrated=False)

    # Random: cheapest model mixed with the reference (expected values).
    fr = np.array([0.0, 1.0])  # straight lines: the metrics interpolate linearly between points
    curves["random"] = [
        {"param": float(f), "cost": (1 - f) * c_cheap + f * c_ref, "agreement": (1 - f) * a_cheap + f}
        for f in fr
    ]
    for i, m in enumerate(models[1:], 1):  # each cheaper model mixed at random with the reference
        if m != reference:
            c_m, a_m = float(C[i].mean()), float(A[i].mean())
            curves[f"random[{m}]"] = [
                {"param": float(f), "cost": (1 - f) * c_m + f * c_ref, "agreement": (1 - f) * a_m + f}
                for f in fr
            ]
    # Best random mix of any models with hindsight agreement rates (LP mix).
    singles = [(float(C[i].mean()), float(A[i].mean())) for i in range(len(models))]
    hull = cost_agreement_hull(
        {m: singles[i][1] for i, m in enumerate(models)}, {m: singles[i][0] for i, m in enumerate(models)}, reference
    )
    curves["lp-mix"] = [
        {"param": m, "cost": singles[models.index(m)][0], "agreement": singles[models.index(m)][1]} for m in hull
    ]
    curves["single"] = [
        {"param": m, "cost": singles[i][0], "agreement": singles[i][1]} for i, m in enumerate(models)
    ]

    # Margin-style cascades: small model keeps its answer when confidence >= tau, else reference too.
    for i, m in enumerate(models):
        if m == reference:
            continue
        conf = te.confidence[m][keep]
        if not np.isfinite(conf).any():
            continue
        conf = np.where(np.isfinite(conf), conf, -np.inf)
        taus = np.unique(
            np.concatenate([[-np.inf, np.inf], np.quantile(conf[np.isfinite(conf)], np.linspace(0, 1, 201))])
        )
        rows = []
        for tau in taus:
            kept = conf >= tau
            cost = float(C[i].mean() + (C[ref_i] * ~kept).mean())
            agr = float(np.where(kept, A[i], 1.0).mean())
            rows.append({"param": float(tau), "cost": cost, "agreement": agr})
        curves["cascade" if i == 0 else f"cascade[{m}]"] = rows

    # Per-item hindsight oracle: the cheapest agreeing model everywhere (agreement 1), then, for lower
    # agreement, the items with the largest savings switched to the cheapest model (a disagreement).
    agree_cost = np.where(A > 0.5, C, np.inf).min(axis=0)
    saving = np.sort(np.where(A[0] > 0.5, 0.0, agree_cost - C[0]))[::-1]
    steps = np.unique(np.linspace(0, n, 201).astype(int))
    cum = np.r_[0.0, np.cumsum(saving)]
    curves["oracle"] = [
        {"param": int(k), "cost": float((agree_cost.sum() - cum[k]) / n), "agreement": 1.0 - k / n}
        for k in steps
    ]

    # Normalised axes.
    for rows in curves.values():
        for r in rows:
            r["x"] = (r["cost"] - c_cheap) / (c_ref - c_cheap)
            r["cost_share"] = r["cost"] / c_ref
            r["pgr"] = (r["agreement"] - a_cheap) / (1 - a_cheap)

    summary = {}
    for method, rows in curves.items():
        if method == "single":
            continue
        x = np.array([r["x"] for r in rows])
        y = np.array([r["pgr"] for r in rows])
        apgr, cpt = apgr_cpt(x, y)
        sav = {}
        xs, ys = pareto(np.array([r["cost"] for r in rows]), np.array([r["agreement"] for r in rows]))
        xs, ys = xs[1:], ys[1:]  # drop the (0, 0) anchor: raw costs here
        for t in TARGETS:
            if ys.size == 0 or ys[-1] < t - 1e-12:
                sav[t] = math.nan
            elif ys[0] >= t:
                sav[t] = c_ref / xs[0]
            else:  # cheapest cost reaching t, mixing two neighbouring operating points at random
                sav[t] = c_ref / float(np.interp(t, ys, xs))
        summary[method] = {
            "apgr": apgr,
            "cpt50_x": cpt,
            "cpt50_cost_share": (c_cheap + cpt * (c_ref - c_cheap)) / c_ref
            if math.isfinite(cpt)
            else math.nan,
            "savings": sav,
        }
    best_cascade = max((k for k in summary if k.startswith("cascade")), key=lambda k: summary[k]["apgr"])
    summary["cascade-best"] = {**summary[best_cascade], "which": best_cascade}

    # "Every cost": router envelope minus random's on the whole grid (agreement units).
    env_random = envelope(
        np.array([r["x"] for r in curves["random"]]), np.array([r["pgr"] for r in curves["random"]])
    )
    vs_random = {}
    for method, rows in curves.items():
        if method.startswith("router") or method.startswith("cascade"):
            env = envelope(np.array([r["x"] for r in rows]), np.array([r["pgr"] for r in rows]))
            vs_random[method] = gap_to_random(env, env_random, a_cheap, n)

    # Prediction quality on test.
    quality = {}
    for m in models:
        if m == reference:
            continue
        y = A[models.index(m)]
        kind = features[0]
        p, raw = preds[kind][m], preds_raw[kind][m]
        pk = predictors[kind]
        base = pk.rates[m]
        quality[m] = {
            "auroc": auroc(y, raw),
            **{f"auroc_{k}": auroc(y, preds_raw[k][m]) for k in features},
            "oof_auroc": pk.oof_auroc.get(m, math.nan),
            **{f"oof_auroc_{k}": predictors[k].oof_auroc.get(m, math.nan) for k in features},
            "auroc_pooled": auroc(y, pred_pooled[m]) if pred_pooled is not None else math.nan,
            # for comparison: the model's own recorded confidence (needs the call; what the cascade uses)
            "auroc_confidence": auroc(y, np.nan_to_num(te.confidence[m][keep], nan=-1e9)),
            "brier": float(np.mean((p - y) ** 2)),
            "brier_const": float(np.mean((base - y) ** 2)),
            "ece": ece(y, p),
            "rate_train": base,
            "rate_test": float(y.mean()),
            "mean_pred": float(p.mean()),
            "C": pk.chosen_C.get(m, math.nan),
            "shrink": pk.calibration.get(m, (math.nan, math.nan))[0],
            "routable": m in pk.routable,
            "price": prices[m],
        }
    ratios = [r["cost_share"] / r["param"] for r in curves["router-budget"]]
    return {
        "set": name,
        "reference": reference,
        "models": models,
        "n_train": len(prompts_tr),
        "n_test": n,
        "c_cheap": c_cheap,
        "c_ref": c_ref,
        "a_cheap": a_cheap,
        "curves": curves,
        "summary": summary,
        "quality": quality,
        "budget_max_ratio": max(ratios),
        "budget_median_ratio": float(np.median(ratios)),
        "vs_random": vs_random,
        "routable": predictor.routable,
        "features": list(features),
        "fit_s": fit_s,
        "seconds": time.perf_counter() - t_start,
    }


# --------------------------------------------------------------------------------------------------
# Latency (fresh interpreter: cold load, then single-prompt calls).

_LATENCY_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
from smartmix.router import AgreementPredictor, select_threshold
t1 = time.perf_counter()
pred = AgreementPredictor.load(sys.argv[1])
t2 = time.perf_counter()
getattr(pred.embedder, "load", lambda: None)()
t3 = time.perf_counter()
prompts = json.load(open(sys.argv[2]))
pred.predict(prompts[:3])  # warm-up
total, embed, cpu = [], [], []
for q in prompts:
    a, a_cpu = time.perf_counter(), time.process_time()
    e = pred.embed([q])
    b = time.perf_counter()
    p = pred.predict([q], embeddings=e)
    select_threshold(p, pred.costs, 0.8, reference=pred.reference)
    c, c_cpu = time.perf_counter(), time.process_time()
    total.append(c - a); embed.append(b - a); cpu.append(c_cpu - a_cpu)
json.dump({"import_s": t1 - t0, "load_predictor_s": t2 - t1, "load_embedder_s": t3 - t2,
           "total": total, "embed": embed, "cpu": cpu}, sys.stdout)
"""


def measure_latency(
    data_dir: Path, name: str, n_prompts: int, cache: EmbeddingCache, kind: str = "minilm"
) -> dict:
    train_path = data_dir / name / "train.jsonl"
    te = read_recorded(data_dir / name / "test.jsonl")
    train_prompts = read_recorded(train_path).prompts
    emb = cache.get(train_prompts) if kind == "minilm" else FEATURES[kind]().encode(train_prompts)
    predictor = train_from_recorded(
        [train_path], embeddings=emb, predictor=AgreementPredictor(FEATURES[kind]())
    )
    rng = np.random.default_rng(0)
    prompts = [te.prompts[i] for i in rng.choice(len(te), size=min(n_prompts, len(te)), replace=False)]
    with tempfile.TemporaryDirectory() as tmp:
        path = predictor.save(Path(tmp) / "router.npz")
        size = path.stat().st_size
        qpath = Path(tmp) / "prompts.json"
        qpath.write_text(json.dumps(prompts))
        proc = subprocess.run(
            [sys.executable, "-c", _LATENCY_SCRIPT, str(path), str(qpath)],
            capture_output=True,
            text=True,
            check=True,
        )
    raw = json.loads(proc.stdout)
    tot = np.array(raw["total"]) * 1000
    emb = np.array(raw["embed"]) * 1000
    return {
        "features": kind,
        "set": name,
        "prompts": len(prompts),
        "file_bytes": size,
        "import_ms": raw["import_s"] * 1000,
        "load_predictor_ms": raw["load_predictor_s"] * 1000,
        "load_embedder_ms": raw["load_embedder_s"] * 1000,
        "median_ms": float(np.median(tot)),
        "p99_ms": float(np.quantile(tot, 0.99)),
        "mean_ms": float(tot.mean()),
        "embed_median_ms": float(np.median(emb)),
        # CPU time of the calling process per call: close to the wall time on an idle core (1 BLAS thread)
        "cpu_median_ms": float(np.median(raw["cpu"]) * 1000),
        "cpu_p99_ms": float(np.quantile(raw["cpu"], 0.99) * 1000),
        "head_median_ms": float(np.median(tot - emb)),
        "load_average_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS")
        or os.environ.get("OMP_NUM_THREADS")
        or "default",
    }


# --------------------------------------------------------------------------------------------------
# Output.

METHODS = (
    "router-threshold",
    "router-budget",
    "router-threshold[hashing]",
    "router-budget[hashing]",
    "router-pooled",
    "random",
    "lp-mix",
    "cascade",
    "cascade-best",
    "oracle",
)


def _get(r: dict, method: str, key: str, target: float | None = None) -> float:
    s = r["summary"].get(method)
    if s is None:
        return math.nan
    return s["savings"][target] if key == "savings" else s[key]


def fmt(v: float, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def write_outputs(results: list[dict], latency: list[dict] | None, out: Path, command: str, code: str = "") -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", "method", "param", "cost_usd", "cost_share", "x", "agreement", "pgr"])
        for r in results:
            for method, rows in r["curves"].items():
                for row in rows:
                    w.writerow(
                        [
                            r["set"],
                            method,
                            row["param"],
                            f"{row['cost']:.8g}",
                            f"{row['cost_share']:.6f}",
                            f"{row['x']:.6f}",
                            f"{row['agreement']:.6f}",
                            f"{row['pgr']:.6f}",
                        ]
                    )
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["set", "method", "apgr", "cpt50_x", "cpt50_cost_share", *[f"savings_at_{t}" for t in TARGETS]]
        )
        for r in results:
            for method in [*METHODS, *sorted(set(r["summary"]) - set(METHODS))]:
                if method not in r["summary"]:
                    continue
                s = r["summary"][method]
                w.writerow(
                    [
                        r["set"],
                        method,
                        f"{s['apgr']:.4f}",
                        fmt(s["cpt50_x"], 4),
                        fmt(s["cpt50_cost_share"], 4),
                        *[fmt(s["savings"][t], 3) for t in TARGETS],
                    ]
                )
    qcols = [
        "routable",
        "price",
        "rate_train",
        "rate_test",
        "mean_pred",
        "auroc_minilm",
        "auroc_hashing",
        "oof_auroc_minilm",
        "oof_auroc_hashing",
        "auroc_pooled",
        "auroc_confidence",
        "brier",
        "brier_const",
        "ece",
        "C",
        "shrink",
    ]
    with open(out / "auroc.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", "model", *qcols])
        for r in results:
            for m, q in r["quality"].items():
                w.writerow(
                    [r["set"], m]
                    + [
                        q.get(k)
                        if isinstance(q.get(k), bool)
                        else fmt(q.get(k, math.nan), 4 if k != "price" else 8)
                        for k in qcols
                    ]
                )
    with open(out / "vs_random.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        keys = ["min_gap", "min_gap_x", "share_below", "min_z", "min_z_x", "below_2sigma"]
        w.writerow(["set", "method", *keys])
        for r in results:
            for method, v in r["vs_random"].items():
                w.writerow([r["set"], method, *[v[k] for k in keys]])
    if latency:
        with open(out / "latency.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(list(latency[0]))
            for row in latency:
                w.writerow(list(row.values()))

    lines = ["# Router evaluation (Routoo-style predictor + selectors)", ""]
    lines.append(
        f"Command: `{command}`" + (f" (code {code})" if code else "")
        + ". Train on each set's train split, score on its test split."
    )
    lines.append(
        "APGR: area under the PGR-vs-normalised-cost envelope (random = 0.5). CPT(50%): normalised cost "
        "needed for PGR 0.5 (and as share of the reference-only cost). Higher APGR / lower CPT is better."
    )
    lines.append(
        "`lp-mix`, `cascade-best` and `oracle` use hindsight (true test rates / best small model / per item)."
    )
    lines.append("")
    lines.append("## APGR and CPT(50%)")
    lines.append("")
    head = "| set | " + " | ".join(METHODS) + " |"
    lines += [head, "|" + "---|" * (len(METHODS) + 1)]
    for r in results:
        cells = [
            f"{fmt(_get(r, m, 'apgr'))} / {fmt(_get(r, m, 'cpt50_x'), 2)} ({fmt(_get(r, m, 'cpt50_cost_share'), 2)})"
            for m in METHODS
        ]
        lines.append(f"| {r['set']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cell: APGR / CPT(50%) as normalised cost (as share of reference cost).")
    lines.append("")
    lines.append("## Savings vs reference-only at target agreement (hindsight operating point)")
    lines.append("")
    lines += ["| set | T | " + " | ".join(METHODS) + " |", "|" + "---|" * (len(METHODS) + 2)]
    for r in results:
        for t in TARGETS:
            lines.append(
                f"| {r['set']} | {t} | "
                + " | ".join(f"{fmt(_get(r, m, 'savings', t), 2)}×" for m in METHODS)
                + " |"
            )
    lines.append("")
    lines.append("## Router against random routing at every cost")
    lines.append("")
    lines.append(
        "Router envelope minus the random envelope (cheapest model + reference) on the 1001-point grid of "
        "normalised cost, in agreement units. sigma(x) = sqrt(a(1-a) x(1-x) / n) is the sampling s.d. of random "
        "routing's test agreement at share x (a: cheapest model's test agreement, n: test items); the check "
        "allows 2 sigma for noise. `min gap`: the lowest difference and where; `share < 0`: grid share strictly "
        "below; `worst z`: lowest difference in sigma units; `> 2σ below`: grid points failing the check."
    )
    lines.append("")
    lines += [
        "| set | method | min gap (at x) | share < 0 | worst z (at x) | > 2σ below |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for method in [m for m in METHODS if m in r["vs_random"]] + ["router-threshold[all models]"]:
            v = r["vs_random"].get(method)
            if v is None:
                continue
            lines.append(
                f"| {r['set']} | {method} | {v['min_gap']:+.4f} ({v['min_gap_x']:.3f}) | {v['share_below']:.3f} | "
                f"{v['min_z']:+.2f} ({v['min_z_x']:.3f}) | {v['below_2sigma']} |"
            )
    lines.append("")
    lines.append(
        "`router-threshold[all models]`: ablation with every model routable and uncalibrated heads (the "
        "selectors alone). Cascades pay the cheap call on escalated items, so they end slightly below 1 at x = 1."
    )
    lines.append("")
    lines.append("Routable models (upper hull of training cost and agreement rate):")
    lines.append("")
    for r in results:
        lines.append(f"- {r['set']}: {', '.join(r['routable'])}")
    lines.append("")
    lines.append("## Predicted agreement on test: AUROC (MiniLM / hashing features), Brier, ECE")
    lines.append("")
    lines.append(
        "AUROC of each head's raw ranking on test and out-of-fold on train; `own conf.`: the model's recorded "
        "confidence (known only after calling it; what the cascade uses). Brier/ECE of the calibrated MiniLM "
        "predictions; `Brier const`: predicting the training rate. `a`: out-of-fold Platt slope (0 = constant)."
    )
    lines.append("")
    lines += [
        "| set | model | routable | price $/req | train / test agreement | mean pred | AUROC test | AUROC OOF | AUROC pooled | own conf. | Brier | Brier const | ECE | C | a |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for m, q in r["quality"].items():
            lines.append(
                f"| {r['set']} | {m} | {'yes' if q['routable'] else 'no'} | {q['price']:.3g} | "
                f"{fmt(q['rate_train'])} / {fmt(q['rate_test'])} | {fmt(q['mean_pred'])} | "
                f"{fmt(q.get('auroc_minilm', math.nan))} / {fmt(q.get('auroc_hashing', math.nan))} | "
                f"{fmt(q.get('oof_auroc_minilm', math.nan))} / {fmt(q.get('oof_auroc_hashing', math.nan))} | "
                f"{fmt(q['auroc_pooled'])} | {fmt(q['auroc_confidence'])} | {fmt(q['brier'], 4)} | "
                f"{fmt(q['brier_const'], 4)} | {fmt(q['ece'])} | {q['C']:g} | {fmt(q['shrink'], 2)} |"
            )
    lines.append("")
    lines.append(
        "## Budget selector: realised test cost share / budget share (lambda tuned on train out-of-fold predictions)"
    )
    lines.append("")
    for r in results:
        lines.append(
            f"- {r['set']}: median {r['budget_median_ratio']:.3f}, max {r['budget_max_ratio']:.3f} "
            f"over {len(r['curves']['router-budget'])} budgets"
        )
    if latency:
        lines.append("")
        lines.append(
            "## Latency on CPU (fresh process; single-prompt calls: embed + heads + select_threshold)"
        )
        lines.append("")
        lines.append("| what | " + " | ".join(str(row["features"]) for row in latency) + " |")
        lines.append("|---|" + "---|" * len(latency))
        for k in latency[0]:
            if k == "features":
                continue
            cells = [fmt(row[k], 2) if isinstance(row[k], float) else str(row[k]) for row in latency]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Plots: `curves_<set>.png`, all sets: `curves.png`.")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {
        "router-threshold": dict(color="C0", lw=2, label="router (θ sweep)"),
        "router-budget": dict(color="C0", lw=0, marker="o", ms=3, label="router (budget, λ from train)"),
        "random": dict(color="gray", ls="--", label="random (cheapest + ref)"),
        "lp-mix": dict(color="C2", ls=":", lw=2, label="best random mix (hindsight)"),
        "cascade": dict(color="C3", lw=2, label="cascade on confidence (cheapest)"),
    }

    def draw(ax, r):
        for method, kw in style.items():
            rows = sorted(r["curves"][method], key=lambda d: d["cost"])
            ax.plot([d["cost_share"] for d in rows], [d["agreement"] for d in rows], **kw)
        for d in r["curves"]["single"]:
            ax.scatter(d["cost_share"], d["agreement"], color="k", s=14, zorder=5)
            ax.annotate(
                d["param"],
                (d["cost_share"], d["agreement"]),
                fontsize=6,
                xytext=(3, -8),
                textcoords="offset points",
            )
        rows = sorted(r["curves"]["oracle"], key=lambda d: d["cost"])
        ax.plot(
            [d["cost_share"] for d in rows],
            [d["agreement"] for d in rows],
            color="goldenrod",
            ls="-.",
            lw=1,
            label="per-item oracle (hindsight)",
        )
        ax.set_xlim(0, 1.05)
        lowest = min(d["agreement"] for d in r["curves"]["single"])
        ax.set_ylim(max(0.0, lowest - 0.03), 1.01)
        ax.set_title(r["set"], fontsize=9)
        ax.set_xlabel("cost / reference-only cost")
        ax.set_ylabel(f"agreement with {r['reference']}")
        ax.grid(alpha=0.3)

    for r in results:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        draw(ax, r)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / f"curves_{r['set']}.png", dpi=120)
        plt.close(fig)
    cols = 3
    rows_n = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 4 * rows_n), squeeze=False)
    for ax, r in zip(axes.flat, results, strict=False):
        draw(ax, r)
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def run_router(
    sets: Sequence[tuple[str, Path]],
    out: Path = DEFAULT_OUT,
    command: str = "smartmix bench --suite router",
    code: str = "",
    cache_dir: Path | None = DEFAULT_CACHE,
    features: Sequence[str] = ("minilm", "hashing"),
    pooled: bool = True,
    latency_set: str | None = "mmlu-qwen-oai",
    latency_prompts: int = 200,
    plots: bool = True,
    seed: int = 0,
    echo=print,
) -> str:
    """Evaluate the router on each (set name, data folder holding ``<name>/train.jsonl`` and ``test.jsonl``);
    write the reports under ``out`` and return the Markdown report."""
    cache = EmbeddingCache(cache_dir, Embedder()) if "minilm" in features else EmbeddingCache(None, HashingEmbedder())
    results = []
    for name, data_dir in sets:
        pool = name.split("-", 1)[1] if "-" in name else name
        pooled_sets = [s for s in SETS if s.split("-", 1)[-1] == pool and (data_dir / s / "train.jsonl").exists()]
        if name not in pooled_sets:
            pooled_sets = []
        r = evaluate_set(name, data_dir, cache, seed, pooled_sets if pooled else (), tuple(features))
        results.append(r)
        s = r["summary"]
        echo(
            f"{name}: router APGR {s['router-threshold']['apgr']:.3f} (random {s['random']['apgr']:.3f}, "
            f"lp-mix {s['lp-mix']['apgr']:.3f}, cascade {s['cascade']['apgr']:.3f}) [{r['seconds']:.0f} s]"
        )
    if cache.computed:
        echo(f"embedded {cache.computed} new prompts in {cache.seconds:.1f} s")
    latency = None
    by_name = dict(sets)
    if latency_set and latency_set in by_name:
        latency = [
            measure_latency(by_name[latency_set], latency_set, latency_prompts, cache, kind) for kind in features
        ]
    text = write_outputs(results, latency, out, command, code)
    if plots:
        plot(results, out)
    return text


def router_sets(paths: Sequence[Path] | None) -> list[tuple[str, Path]]:
    """(set name, data folder) for each recorded set: folders holding train.jsonl and test.jsonl, or their
    test.jsonl files; by default the shared sets under ../shared/data."""
    from smartmix.errors import DataError

    if not paths:
        found = [(s, DEFAULT_DATA) for s in SETS if (DEFAULT_DATA / s / "test.jsonl").exists()]
        if not found:
            raise DataError(f"no recorded sets under {DEFAULT_DATA}; pass folders with --data")
        return found
    out = []
    for p in paths:
        folder = Path(p) if Path(p).is_dir() else Path(p).parent
        if not (folder / "train.jsonl").exists() or not (folder / "test.jsonl").exists():
            raise DataError(f"the router suite needs {folder}/train.jsonl and {folder}/test.jsonl")
        out.append((folder.name, folder.parent))
    return out


def run_router_suite(out: Path, data: Sequence[Path] | None, command: str, code: str, quick: bool = False, echo=print) -> None:
    """``smartmix bench --suite router``: every set (``quick``: hashed features only, no latency)."""
    sets = router_sets(data)
    start = time.perf_counter()
    run_router(
        sets, out, command, code, features=("hashing",) if quick else ("minilm", "hashing"), pooled=not quick,
        latency_set=None if quick else "mmlu-qwen-oai", echo=echo,
    )
    echo(f"== router: {len(sets)} sets, {time.perf_counter() - start:.0f} s. Full tables: {out / 'report.md'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache folder, or 'none'")
    ap.add_argument("--latency-set", default="mmlu-qwen-oai")
    ap.add_argument("--latency-prompts", type=int, default=200)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--features",
        nargs="+",
        default=["minilm", "hashing"],
        choices=list(FEATURES),
        help="feature kinds to evaluate; the first is the main router, the others are variants",
    )
    ap.add_argument(
        "--no-pooled",
        dest="pooled",
        action="store_false",
        help="skip the variant trained on the train splits of all sets with the same model pool",
    )
    args = ap.parse_args(argv)
    from smartmix.bench.command import code_version

    text = run_router(
        [(s, args.data_dir) for s in args.sets],
        args.out,
        " ".join(["python benchmarks/router_eval.py", *(argv if argv is not None else sys.argv[1:])]),
        code_version(),
        None if args.cache_dir == "none" else Path(args.cache_dir),
        args.features,
        args.pooled,
        None if args.skip_latency else args.latency_set,
        args.latency_prompts,
        not args.no_plots,
        args.seed,
    )
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
