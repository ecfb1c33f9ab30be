"""Models, their prices, and the pool one job draws from.

Prices are per token in USD throughout the code (the CLI takes them per million tokens, as providers
list them). A price comes, in this order, from the user, from the ``genai-prices`` snapshot bundled with
that package (no network), or — for replayed runs — from what the recorded calls cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from smartmix.errors import ConfigError, PriceError, UnknownModelError

__all__ = ["ModelSpec", "Pool", "lookup_price", "parse_price", "estimate_tokens", "PRICE_SOURCES"]

PRICE_SOURCES = ("given", "genai-prices", "recorded", "none")


def estimate_tokens(text: str | None) -> int:
    """A rough token count for text whose usage was not recorded: one token per four characters."""
    return math.ceil(len(text or "") / 4)


def _check_price(value: float | None, what: str, model: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} of model '{model}' must be a non-negative number of USD, got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A model and what it costs: per input/output token, or per call when token counts are unknown."""

    name: str
    input_price: float | None = None
    output_price: float | None = None
    call_price: float | None = None
    # price of a provider batch call / price of the same synchronous call (None: genai-prices, else 1.0)
    batch_price_factor: float | None = None
    price_source: str = "given"

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ConfigError("a model needs a non-empty name")
        _check_price(self.input_price, "input_price", self.name)
        _check_price(self.output_price, "output_price", self.name)
        _check_price(self.call_price, "call_price", self.name)
        if self.price_source not in PRICE_SOURCES:
            raise ConfigError(
                f"price_source must be one of {', '.join(PRICE_SOURCES)}, got {self.price_source!r}"
            )

    @property
    def has_token_prices(self) -> bool:
        return self.input_price is not None and self.output_price is not None

    @property
    def priced(self) -> bool:
        return self.has_token_prices or self.call_price is not None

    @property
    def typical_call_price(self) -> float:
        """What a short call (100 tokens in, 5 out) costs; used to order models. ``inf`` when unpriced."""
        if self.has_token_prices:
            return self.input_price * 100 + self.output_price * 5  # type: ignore[operator]
        if self.call_price is not None:
            return self.call_price
        return math.inf

    def cost(self, input_tokens: int | None, output_tokens: int | None) -> float:
        """USD for one call. Token prices when both counts are known, else the per-call price."""
        tokens_known = input_tokens is not None and output_tokens is not None
        if tokens_known and self.has_token_prices:
            return input_tokens * self.input_price + output_tokens * self.output_price  # type: ignore[operator]
        if self.call_price is not None:
            return self.call_price
        if self.has_token_prices:
            raise PriceError(
                f"cannot price a call to '{self.name}': its token counts are unknown and it has no per-call "
                "price. Record input_tokens/output_tokens or cost_usd for it."
            )
        raise PriceError(
            f"no price for model {self.name}; give one with --price {self.name}=IN/OUT "
            "(USD per million tokens) or in the config file"
        )


@lru_cache(maxsize=512)
def lookup_price(name: str) -> tuple[float, float] | None:
    """Per-token (input, output) USD list price from genai-prices' bundled data, or None if unknown.

    Works offline: only the snapshot shipped with the package is read. ``provider/model`` names are
    looked up at that provider first.
    """
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a core dependency
        return None

    def per_token(model: str, provider: str | None) -> tuple[float, float] | None:
        n = 1000  # small enough to stay in the base tier of tiered prices
        try:
            p_in = calc_price(Usage(input_tokens=n, output_tokens=0), model, provider_id=provider)
            p_out = calc_price(Usage(input_tokens=0, output_tokens=n), model, provider_id=provider)
        except Exception:  # LookupError for unknown models; anything else also means "no price"
            return None
        return float(p_in.total_price / n), float(p_out.total_price / n)

    if "/" in name:
        provider, _, model = name.partition("/")
        found = per_token(model, provider) or per_token(model, None)
        if found:
            return found
    return per_token(name, None)


def parse_price(text: str) -> tuple[str, float, float]:
    """Parse ``MODEL=IN/OUT`` (USD per million tokens) into ``(model, input_per_token, output_per_token)``.

    >>> parse_price("gpt-4o=2.5/10")
    ('gpt-4o', 2.5e-06, 1e-05)
    """
    usage = f"--price expects MODEL=IN/OUT in USD per million tokens, e.g. gpt-4o=2.5/10; got {text!r}"
    name, eq, prices = text.rpartition("=")
    name = name.strip()
    if not eq or not name:
        raise ConfigError(usage)
    parts = prices.split("/")
    if len(parts) != 2:
        raise ConfigError(usage)
    values = []
    for part in parts:
        try:
            value = float(part.strip())
        except ValueError:
            raise ConfigError(f"{usage} ({part.strip()!r} is not a number)") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{usage} (prices must be non-negative)")
        values.append(value / 1e6)
    return name, values[0], values[1]


class Pool:
    """The models of one job: one reference, and candidates ordered cheapest first."""

    def __init__(self, models: Sequence[ModelSpec], reference: str):
        if not models:
            raise ConfigError("the model pool is empty; name at least the reference model")
        by_name: dict[str, ModelSpec] = {}
        for spec in models:
            if spec.name in by_name:
                raise ConfigError(f"model '{spec.name}' is named twice in the pool; name each model once")
            by_name[spec.name] = spec
        if reference not in by_name:
            raise UnknownModelError(
                f"reference model '{reference}' is not in the pool ({', '.join(by_name)}); "
                "add it to the models or pick one of these"
            )
        self._by_name = by_name
        self.reference: ModelSpec = by_name[reference]
        others = [spec for spec in models if spec.name != reference]
        self.candidates: list[ModelSpec] = sorted(others, key=lambda s: s.typical_call_price)
        self.names: list[str] = [s.name for s in self.candidates] + [reference]

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownModelError(
                f"model '{name}' is not in the pool; known models: {', '.join(self.names)}"
            ) from None

    @property
    def models(self) -> list[ModelSpec]:
        """Every model, candidates (cheapest first) then the reference."""
        return [*self.candidates, self.reference]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Pool(candidates={[s.name for s in self.candidates]}, reference={self.reference.name!r})"

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        reference: str,
        prices: Mapping[str, tuple[float, float]] | None = None,
        require_prices: bool = True,
    ) -> Pool:
        """A pool from model names, priced from ``prices`` (per token) first, then genai-prices.

        The reference is added to ``names`` when missing. ``require_prices=False`` leaves models with no
        known price unpriced (replays whose recorded outputs carry ``cost_usd``).
        """
        prices = prices or {}
        names = list(names)
        if reference not in names:
            names.append(reference)
        specs = []
        for name in names:
            if name in prices:
                p_in, p_out = prices[name]
                specs.append(ModelSpec(name, p_in, p_out, price_source="given"))
            elif (found := lookup_price(name)) is not None:
                specs.append(ModelSpec(name, found[0], found[1], price_source="genai-prices"))
            elif require_prices:
                raise PriceError(
                    f"no price for model {name}; give one with --price {name}=IN/OUT "
                    "(USD per million tokens) or in the config file"
                )
            else:
                specs.append(ModelSpec(name, price_source="none"))
        return cls(specs, reference)
