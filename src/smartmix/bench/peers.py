"""Peers run on the same batches as smartmix's methods. Today: BARGAIN's accuracy-target method.

Wiring of ``BARGAIN.BARGAIN_A`` (bargain==0.1.3), unchanged algorithm and default settings (M = 20 candidate
thresholds, samples of 10, its own betting test and early-abandon heuristic):

- records are the item positions 0..N-1 of the batch;
- proxy = the cheapest candidate with a score (the cheapest model on recorded data); its prediction is its recorded answer (represented by the position, since
  only agreement matters) and its score is ``exp(confidence)`` of its recorded confidence (a log-probability;
  the bench passes that score in), 0 where unknown;
- oracle = the reference: ``is_answer_correct`` returns whether the proxy agreed with the reference on the
  item (the same agreement the methods are scored on); ``get_pred`` returns the reference's answer;
- δ = 1 − confidence, target T, seed = the trial's seed (BARGAIN seeds numpy's global generator).

Charged: the proxy on every item plus the reference on every item BARGAIN sends to the oracle (sampled or
routed: ``return_oracle_usage``). Realised agreement: oracle items agree by definition, proxy items agree
where the recorded answers do. The overrides below only replace BARGAIN's per-item thread pool with array
lookups; they return exactly what its generic ``Proxy``/``Oracle`` would for these recorded answers.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np

from smartmix.errors import MissingExtraError

__all__ = ["PEERS", "PeerOutcome", "run_bargain", "bargain_available"]

PEERS = ("bargain",)


@dataclass(frozen=True)
class PeerOutcome:
    realised_agreement: float
    cost: float
    reference_cost: float
    profiling_cost: float
    shares: dict[str, float]


def bargain_available() -> bool:
    try:
        import BARGAIN  # noqa: F401
    except ImportError:
        return False
    return True


def _classes():
    try:
        from BARGAIN import BARGAIN_A, Oracle, Proxy
    except ImportError:
        raise MissingExtraError("The BARGAIN peer", "bench", "bargain==0.1.3") from None

    class RecordedProxy(Proxy):
        def __init__(self, scores: np.ndarray):
            super().__init__(verbose=False)
            self.scores = scores

        def proxy_func(self, input):  # the generic path, unused by the override below
            i = int(input)
            return i, float(self.scores[i])

        def get_preds_and_scores(self, indxs, data_records):
            idx = np.asarray(indxs).astype(np.int64)
            return idx.copy(), self.scores[idx]

    class RecordedOracle(Oracle):
        def __init__(self, agree: np.ndarray):
            super().__init__(verbose=False)
            self.agree = agree
            self.calls: set[int] = set()

        def oracle_func(self, input, proxy_output):  # the generic path, unused by the overrides below
            i = int(input)
            return bool(self.agree[i]), i

        def is_answer_correct(self, data_indxs, data_records, proxy_output_at_indxs):
            idx = np.asarray(data_indxs).astype(np.int64)
            self.calls.update(idx.tolist())
            return self.agree[idx]

        def get_pred(self, data_records, indxs=None):
            idx = np.asarray(indxs if indxs is not None else data_records).astype(np.int64)
            self.calls.update(idx.tolist())
            return idx.copy()

    return BARGAIN_A, RecordedProxy, RecordedOracle


def run_bargain(
    agree_proxy: np.ndarray,
    score_proxy: np.ndarray,
    proxy_cost: np.ndarray,
    reference_cost: np.ndarray,
    target: float,
    confidence: float,
    seed: int,
    names: tuple[str, str] = ("proxy", "reference"),
) -> PeerOutcome:
    """Run BARGAIN_A on one batch (see the module doc for the wiring) and read off its cost and agreement.

    ``score_proxy``: the proxy's score per item (``exp`` of its recorded log-probability confidence).
    """
    bargain_a, proxy_cls, oracle_cls = _classes()
    n = len(agree_proxy)
    scores = np.where(np.isnan(score_proxy), 0.0, score_proxy)
    agree = np.asarray(agree_proxy, dtype=bool)
    oracle = oracle_cls(agree)
    method = bargain_a(
        proxy_cls(scores), oracle, target=target, delta=1.0 - confidence, verbose=False, seed=int(seed % 2**32)
    )
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its betting bounds divide by zero at the edges
        _, used = method.process(np.arange(n), return_oracle_usage=True)
    used = np.asarray(used, dtype=bool)
    # Every oracle call is charged once: the items it answers plus any sampled item (already among them).
    called = used.copy()
    if oracle.calls:
        called[np.fromiter(oracle.calls, dtype=np.int64)] = True
    sampled = np.zeros(n, dtype=bool)
    all_sampled = np.asarray(getattr(method.sampler, "all_sampled", []), dtype=np.int64)
    if all_sampled.size:
        # The sampler draws positions in BARGAIN's score order; map them back to batch positions.
        order = np.argsort(scores)[::-1]
        sampled[order[all_sampled]] = True
    realised = float(np.mean(used | agree))
    cost = float(proxy_cost.sum() + reference_cost[called].sum())
    return PeerOutcome(
        realised_agreement=realised,
        cost=cost,
        reference_cost=float(reference_cost.sum()),
        profiling_cost=float(reference_cost[sampled].sum()),
        shares={names[0]: float(np.mean(~used)), names[1]: float(np.mean(used))},
    )
