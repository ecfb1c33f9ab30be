"""What every policy shares: the batch it decides for, the observations it learns from, the plan it returns.

A policy is pure. It never calls a model: it proposes which items to profile next and with which models,
learns from the agreement and cost that come back, and finally returns a :class:`Plan` — a plain record of
which model answers each item — together with the certificate that justifies it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Guarantee:
    """With probability >= ``confidence``, at least ``target`` of all outputs equal the reference's."""

    target: float
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"target must be in (0, 1], got {self.target}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    @property
    def delta(self) -> float:
        return 1.0 - self.confidence

    def required_agreeing(self, n_items: int) -> int:
        """Fewest agreeing outputs that meet the target on ``n_items`` items."""
        return int(math.ceil(self.target * n_items - 1e-9))


@dataclass(frozen=True)
class BatchSpec:
    """The batch a policy decides for. ``models`` lists the candidates cheapest first and the reference last."""

    n_items: int
    models: tuple[str, ...]
    guarantee: Guarantee
    seed: int = 0
    batch_size: int = 10
    options: tuple[tuple[str, Any], ...] = ()  # method-specific settings, e.g. (("budget", 0.002),)
    # the router's predicted agreement with the reference, items x models (NaN for the reference)
    predicted: np.ndarray | None = field(default=None, compare=False, repr=False)

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    @property
    def reference(self) -> int:
        return len(self.models) - 1

    @property
    def candidates(self) -> range:
        return range(len(self.models) - 1)


@dataclass(frozen=True)
class ProfileBatch:
    """Items to profile next: the engine calls every model in ``models`` (indices; the reference included)."""

    items: np.ndarray
    models: tuple[int, ...]


@dataclass
class Certificate:
    """What is guaranteed and the numbers behind it."""

    method: str
    target: float
    confidence: float
    valid: bool
    n_items: int
    profiled: int
    bounds: dict[str, float] = field(default_factory=dict)  # certified agreement over the remaining items
    shares: dict[str, float] = field(default_factory=dict)  # fraction of all items each model answers
    margin: float = 0.0  # random-split allowance, as a fraction of the remaining items
    details: dict[str, Any] = field(default_factory=dict)

    def statement(self) -> str:
        if not self.valid:
            return (
                f"No guarantee: method '{self.method}' does not control its error rate "
                f"(aimed at agreement >= {self.target:.3g} with confidence {self.confidence:.3g})."
            )
        return (
            f"With probability at least {self.confidence:.3g}, at least {self.target:.1%} of the "
            f"{self.n_items:,} outputs equal what the reference model would have answered."
        )


@dataclass
class Plan:
    """Which model answers each item.

    ``profiled[i]``: the item's final answer is the answer model ``assignment[i]`` already gave during
    profiling (usually the reference). Otherwise ``assignment[i]`` is the model to call — unless a cascade
    is planned (``chain`` non-empty): then every remaining item goes through the chain's models in order,
    from its entry stage ``entry[i]`` (stage 0 when ``entry`` is None; ``len(chain)``: straight to the
    reference), keeping the first answer whose score is strictly above that stage's threshold
    (:func:`smartmix.core.chain.keeps`), and the reference answers the items no stage kept.
    """

    assignment: np.ndarray  # model index per item
    profiled: np.ndarray  # bool per item
    certificate: Certificate
    chain: tuple[int, ...] = ()
    thresholds: tuple[float, ...] = ()  # one per chain stage
    entry: np.ndarray | None = None  # per item (indexed like assignment): the chain stage it enters at

    def items_for(self, model: int) -> np.ndarray:
        return np.flatnonzero((self.assignment == model) & ~self.profiled)


class Policy(ABC):
    """Base class of every policy; subclasses register by ``name``."""

    name: ClassVar[str]
    valid: ClassVar[bool] = True
    registry: ClassVar[dict[str, type[Policy]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Policy.registry[cls.name] = cls

    def __init__(self, spec: BatchSpec):
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)

    @property
    def needs_scores(self) -> bool:
        """Whether the policy uses confidence scores (the engine then asks providers for logprobs)."""
        return False

    @abstractmethod
    def next_batch(self) -> ProfileBatch | None:
        """The next items to profile, or None when profiling is over."""

    @abstractmethod
    def observe(
        self, batch: ProfileBatch, agree: np.ndarray, cost: np.ndarray, score: np.ndarray | None = None
    ) -> None:
        """Learn from a profiled batch.

        ``agree[i, j]``: whether model ``batch.models[j]`` agreed with the reference on ``batch.items[i]``
        (a failed call counts as disagreeing; all False when the batch has no reference call);
        ``cost[i, j]``: what that call cost; ``score[i, j]``: the model's confidence score in [0, 1]
        (NaN when the model gives none).
        """

    @abstractmethod
    def plan(self) -> Plan:
        """The final plan; called once ``next_batch`` returned None."""


def make_policy(method: str, spec: BatchSpec) -> Policy:
    from smartmix.errors import ConfigError

    try:
        cls = Policy.registry[method]
    except KeyError:
        known = ", ".join(sorted(Policy.registry))
        raise ConfigError(f"unknown method '{method}'. Choose one of: {known}.") from None
    return cls(spec)
