from __future__ import annotations

import math

import pytest

from smartmix.errors import ConfigError, PriceError, UnknownModelError
from smartmix.models import ModelSpec, Pool, estimate_tokens, lookup_price, parse_price

# -- ModelSpec ---------------------------------------------------------------------------------------


def test_cost_from_token_prices() -> None:
    spec = ModelSpec("m", input_price=2e-6, output_price=8e-6)
    assert spec.cost(1000, 10) == pytest.approx(2e-3 + 8e-5)
    assert spec.typical_call_price == pytest.approx(2e-4 + 4e-5)


def test_cost_falls_back_to_call_price() -> None:
    spec = ModelSpec("m", input_price=1e-6, output_price=1e-6, call_price=0.01)
    assert spec.cost(100, 100) == pytest.approx(2e-4)
    assert spec.cost(None, 100) == 0.01
    assert ModelSpec("m", call_price=0.02).cost(100, 5) == 0.02


def test_cost_errors_say_what_to_do() -> None:
    with pytest.raises(PriceError, match=r"no price for model m; give one with --price m=IN/OUT"):
        ModelSpec("m").cost(10, 10)
    with pytest.raises(PriceError, match="token counts are unknown"):
        ModelSpec("m", 1e-6, 1e-6).cost(None, 3)
    with pytest.raises(PriceError):
        ModelSpec("m", input_price=1e-6).cost(10, 10)


@pytest.mark.parametrize("kwargs", [{"input_price": -1.0}, {"call_price": math.nan}, {"output_price": "1"}])
def test_bad_prices_rejected(kwargs) -> None:
    with pytest.raises(ConfigError, match="non-negative"):
        ModelSpec("m", **kwargs)


def test_bad_name_and_price_source() -> None:
    with pytest.raises(ConfigError, match="non-empty name"):
        ModelSpec(" ")
    with pytest.raises(ConfigError, match="price_source"):
        ModelSpec("m", price_source="magic")


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0 and estimate_tokens(None) == 0
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2


# -- prices ------------------------------------------------------------------------------------------


def test_lookup_price_known_models() -> None:
    assert lookup_price("gpt-4o") == pytest.approx((2.5e-6, 1e-5))
    assert lookup_price("gpt-4o-mini") == pytest.approx((1.5e-7, 6e-7))
    assert lookup_price("openai/gpt-4o") == pytest.approx((2.5e-6, 1e-5))


def test_lookup_price_unknown_is_none() -> None:
    assert lookup_price("no-such-model-xyz") is None
    assert lookup_price("llama3.1-405b") is None


def test_parse_price() -> None:
    name, p_in, p_out = parse_price("gpt-4o=2.5/10")
    assert name == "gpt-4o"
    assert (p_in, p_out) == pytest.approx((2.5e-6, 1e-5))
    assert parse_price(" accounts/fw/llama = 0.9 / 0.9 ")[0] == "accounts/fw/llama"
    assert parse_price("free=0/0")[1:] == (0.0, 0.0)


@pytest.mark.parametrize("bad", ["gpt-4o", "gpt-4o=2.5", "=1/2", "m=1/2/3", "m=a/2", "m=-1/2", "m=inf/1"])
def test_parse_price_bad_syntax(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"--price expects MODEL=IN/OUT in USD per million tokens"):
        parse_price(bad)


# -- Pool --------------------------------------------------------------------------------------------


def specs() -> list[ModelSpec]:
    return [
        ModelSpec("big", 1e-5, 3e-5),
        ModelSpec("mid", 1e-6, 1e-6),
        ModelSpec("flat", call_price=5e-5),
        ModelSpec("tiny", 1e-7, 1e-7),
    ]


def test_pool_orders_candidates_cheapest_first() -> None:
    pool = Pool(specs(), reference="big")
    assert pool.reference.name == "big"
    assert [s.name for s in pool.candidates] == ["tiny", "flat", "mid"]
    assert pool.names == ["tiny", "flat", "mid", "big"]
    assert pool.spec("mid").input_price == 1e-6
    assert "tiny" in pool and "nope" not in pool and len(pool) == 4
    assert [s.name for s in pool] == pool.names


def test_pool_unpriced_candidates_go_last() -> None:
    pool = Pool([ModelSpec("x"), ModelSpec("a", 1e-6, 1e-6), ModelSpec("ref", 1e-5, 1e-5)], "ref")
    assert pool.names == ["a", "x", "ref"]


def test_pool_errors() -> None:
    with pytest.raises(UnknownModelError) as err:
        Pool(specs(), reference="gpt-5")
    assert "gpt-5" in str(err.value) and "big, mid, flat, tiny" in str(err.value)
    with pytest.raises(ConfigError, match="'mid' is named twice"):
        Pool([*specs(), ModelSpec("mid")], reference="big")
    with pytest.raises(ConfigError, match="empty"):
        Pool([], reference="big")
    with pytest.raises(UnknownModelError, match="known models: tiny, flat, mid, big"):
        Pool(specs(), "big").spec("gpt-5")


def test_build_price_precedence() -> None:
    pool = Pool.build(
        ["gpt-4o-mini", "mine"], "gpt-4o", prices={"mine": (1e-7, 2e-7), "gpt-4o": (1e-6, 1e-6)}
    )
    assert pool.names == ["mine", "gpt-4o-mini", "gpt-4o"]  # reference appended
    assert pool.spec("gpt-4o").input_price == 1e-6 and pool.spec("gpt-4o").price_source == "given"
    mini = pool.spec("gpt-4o-mini")
    assert mini.price_source == "genai-prices" and mini.input_price == pytest.approx(1.5e-7)


def test_build_without_price_raises_price_error() -> None:
    with pytest.raises(PriceError) as err:
        Pool.build(["llama3.2-1b"], "gpt-4o")
    assert str(err.value) == (
        "no price for model llama3.2-1b; give one with --price llama3.2-1b=IN/OUT "
        "(USD per million tokens) or in the config file"
    )


def test_build_can_leave_models_unpriced() -> None:
    pool = Pool.build(["llama3.2-1b", "llama3.1-405b"], "llama3.1-405b", require_prices=False)
    assert not pool.spec("llama3.2-1b").priced
    assert pool.spec("llama3.2-1b").price_source == "none"
    with pytest.raises(PriceError):
        pool.spec("llama3.2-1b").cost(1, 1)
