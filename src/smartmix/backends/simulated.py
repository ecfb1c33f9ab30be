"""The SMART paper's own experiment, simulated: its model profiles, prices and dataset sizes.

Each model's agreement with the reference (gpt-4) is an independent coin per item with the profiled
rate; costs are the profiled mean tokens times the 2023 OpenAI list prices. That is the setting in which
the paper reports its savings (``PAPER_REPORTED``), so a policy run here can be checked against them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from smartmix.backends.replay import RecordedArrays
from smartmix.domain import Completion, Request
from smartmix.errors import ConfigError, UnknownModelError
from smartmix.models import ModelSpec, Pool
from smartmix.tasks import Item

__all__ = [
    "SimulatedModel",
    "SimulatedProfile",
    "PAPER_PROFILES",
    "PAPER_REPORTED",
    "simulated_items",
    "simulated_arrays",
    "simulated_answer",
    "SimulatedBackend",
]


@dataclass(frozen=True)
class SimulatedModel:
    """Mean tokens per item and per-token USD prices of one model, and its agreement with the reference."""

    name: str
    prompt_tokens: float
    completion_tokens: float
    agreement: float
    input_price: float
    output_price: float

    @property
    def cost_per_item(self) -> float:
        return self.prompt_tokens * self.input_price + self.completion_tokens * self.output_price


@dataclass(frozen=True)
class SimulatedProfile:
    name: str
    n_items: int
    reference: str
    models: tuple[SimulatedModel, ...]
    n_labels: int = 2

    def pool(self) -> Pool:
        return Pool([ModelSpec(m.name, m.input_price, m.output_price) for m in self.models], self.reference)

    def model(self, name: str) -> SimulatedModel:
        for m in self.models:
            if m.name == name:
                return m
        raise UnknownModelError(
            f"model '{name}' is not in the simulated profile '{self.name}'; its models: "
            f"{', '.join(m.name for m in self.models)}"
        )


# Prices per 1k tokens (input, output), as in the paper.
_PRICES_PER_1K = {
    "gpt-4": (0.03, 0.06),
    "gpt-3.5-turbo-1106": (0.001, 0.002),
    "gpt-3.5-turbo-instruct": (0.0015, 0.002),
    "davinci-002": (0.002, 0.002),
    "babbage-002": (0.0004, 0.0004),
}


def _profile(
    name: str, n_items: int, rows: list[tuple[str, float, float, float]], n_labels: int
) -> SimulatedProfile:
    """Build a profile from the paper's table: tokens per 100 items, agreement, prices per 1k tokens."""
    models = tuple(
        SimulatedModel(
            model,
            prompt_tokens=p100 / 100,
            completion_tokens=c100 / 100,
            agreement=agreement,
            input_price=_PRICES_PER_1K[model][0] / 1000,
            output_price=_PRICES_PER_1K[model][1] / 1000,
        )
        for model, p100, c100, agreement in rows
    )
    return SimulatedProfile(name, n_items, "gpt-4", models, n_labels)


PAPER_PROFILES: dict[str, SimulatedProfile] = {
    "imdb": _profile(
        "imdb",
        50_000,
        [
            ("gpt-4", 31600, 100, 1.0),
            ("gpt-3.5-turbo-1106", 31600, 100, 0.94),
            ("gpt-3.5-turbo-instruct", 30900, 103, 0.96),
            ("davinci-002", 30900, 1599, 0.0),
            ("babbage-002", 30900, 1600, 0.0),
        ],
        n_labels=2,
    ),
    "sms-spam": _profile(
        "sms-spam",
        5_574,
        [
            ("gpt-4", 5038, 200, 1.0),
            ("gpt-3.5-turbo-1106", 5038, 200, 0.94),
            ("gpt-3.5-turbo-instruct", 4338, 213, 0.88),
            ("davinci-002", 4338, 1600, 0.0),
            ("babbage-002", 4338, 1600, 0.0),
        ],
        n_labels=2,
    ),
    "ag-news": _profile(
        "ag-news",
        127_600,
        [
            ("gpt-4", 8554, 136, 1.0),
            ("gpt-3.5-turbo-1106", 8554, 134, 0.90),
            ("gpt-3.5-turbo-instruct", 7854, 138, 0.94),
            ("davinci-002", 7854, 1586, 0.01),
            ("babbage-002", 7854, 1600, 0.0),
        ],
        n_labels=4,
    ),
}

# Savings versus the reference reported by the paper: averages over T = 0.98 ... 0.80 at 95% confidence.
PAPER_REPORTED: dict[str, float] = {"imdb": 7.2, "sms-spam": 4.2, "ag-news": 4.8, "max": 25.6}


def _resolve(profile: SimulatedProfile | str) -> SimulatedProfile:
    if isinstance(profile, SimulatedProfile):
        return profile
    try:
        return PAPER_PROFILES[profile]
    except KeyError:
        raise ConfigError(
            f"unknown simulated profile '{profile}'; choose one of {', '.join(PAPER_PROFILES)}"
        ) from None


def _n(profile: SimulatedProfile, n_items: int | None) -> int:
    n = profile.n_items if n_items is None else n_items
    if n < 1:
        raise ConfigError(f"n_items must be at least 1, got {n}")
    return n


def simulated_items(profile: SimulatedProfile | str, n_items: int | None = None) -> list[Item]:
    """Placeholder items ``"<profile>-<i>"`` with a ``text`` field (the simulation ignores their content)."""
    profile = _resolve(profile)
    return [
        Item(
            id=f"{profile.name}-{i}", fields={"id": f"{profile.name}-{i}", "text": f"{profile.name} item {i}"}
        )
        for i in range(_n(profile, n_items))
    ]


def simulated_arrays(
    profile: SimulatedProfile | str, seed: int, n_items: int | None = None
) -> RecordedArrays:
    """Agreement drawn iid Bernoulli(agreement) per item and model (the reference always agrees).

    Row i depends only on ``seed`` and i, not on ``n_items``: a shorter run is a prefix of a longer one.
    Cost is the profile's mean tokens (unrounded, as in the paper) times the prices, the same for every item.
    """
    profile = _resolve(profile)
    n = _n(profile, n_items)
    rates = np.array([m.agreement for m in profile.models])
    agree = np.random.default_rng(seed).random((n, len(rates))) < rates
    agree[:, [m.name for m in profile.models].index(profile.reference)] = True
    cost = np.broadcast_to(np.array([m.cost_per_item for m in profile.models]), (n, len(rates))).copy()
    nan = np.full((n, len(rates)), np.nan)
    return RecordedArrays(
        models=tuple(m.name for m in profile.models),
        agree=agree,
        cost=cost,
        confidence=nan,
        correct=nan.copy(),
        item_ids=tuple(f"{profile.name}-{i}" for i in range(n)),
    )


def simulated_answer(seed: int, key: str, model: str, agrees: bool, n_labels: int) -> str:
    """What ``model`` says to item ``key``: the item's label (drawn from the seed and the key) when it agrees
    with the reference, else another label."""
    k = random.Random(f"{seed}|{key}|label").randrange(n_labels)
    if agrees:
        return f"label-{k}"
    if n_labels == 1:
        return "no-label"
    shift = 1 + random.Random(f"{seed}|{key}|{model}|other").randrange(n_labels - 1)
    return f"label-{(k + shift) % n_labels}"


class SimulatedBackend:
    """Answers like the simulation: the reference says ``"label-k"``; a model agrees exactly where
    :func:`simulated_arrays` with the same seed says it does, and otherwise says another label.

    Items outside the simulated range (or requests without an item id) get answers drawn from a
    deterministic coin per (seed, item, model). Usage is the profile's mean tokens, rounded; the cost is
    left for the engine to price with the pool (:meth:`SimulatedProfile.pool`).
    """

    def __init__(self, profile: SimulatedProfile | str, seed: int = 0, n_items: int | None = None):
        self.profile = _resolve(profile)
        self.seed = seed
        self._arrays = simulated_arrays(self.profile, seed, n_items)
        self._prefix = f"{self.profile.name}-"

    def __repr__(self) -> str:
        return f"SimulatedBackend(profile={self.profile.name!r}, seed={self.seed}, n_items={self._arrays.n_items})"

    def _agrees(self, key: str, model: str) -> bool:
        index = key[len(self._prefix) :]
        if key.startswith(self._prefix) and index.isdigit() and int(index) < self._arrays.n_items:
            return bool(self._arrays.agree[int(index), self._arrays.index(model)])
        if model == self.profile.reference:
            return True
        return (
            random.Random(f"{self.seed}|{key}|{model}|agree").random() < self.profile.model(model).agreement
        )

    def answer(self, key: str, model: str) -> str:
        """The simulated answer of ``model`` to the item ``key`` (an item id, or the prompt text)."""
        self.profile.model(model)  # unknown model -> UnknownModelError
        return simulated_answer(self.seed, key, model, self._agrees(key, model), self.profile.n_labels)

    answers_per_item = True  # the answer depends on the item id, not only on the prompt

    def endpoint(self, model: str) -> str:
        """The simulated profile and seed that answer (part of the journal's key)."""
        return f"simulated {self.profile.name} seed={self.seed} n={self._arrays.n_items}"

    async def complete(self, request: Request) -> Completion:
        key = request.item_id if request.item_id is not None else request.prompt_text
        spec = self.profile.model(request.model)
        return Completion(
            model=request.model,
            text=self.answer(key, request.model),
            input_tokens=round(spec.prompt_tokens),
            output_tokens=round(spec.completion_tokens),
            cost_usd=None,
        )

    async def aclose(self) -> None:
        return None
