"""What a call costs when a provider batch job answers it.

The model's own ``batch_price_factor`` (from the job file) wins; else genai-prices' batch price for the
model, where it knows one (OpenAI and Anthropic sell batch calls at half price), as a ratio to its
synchronous price; else 1.0 — no discount assumed, and the run says so.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


def batch_price_factor(spec: Any) -> tuple[float, str]:
    """(price of a batch call ÷ price of the same synchronous call, where that number comes from)."""
    given = getattr(spec, "batch_price_factor", None)
    if given is not None:
        return float(given), "config"
    ref = getattr(spec, "price_ref", None) or getattr(spec, "name", None)
    factor = _genai_prices_factor(ref) if ref else None
    if factor is not None:
        return factor, "genai-prices"
    return 1.0, "unknown (no discount assumed)"


@lru_cache(maxsize=256)
def _genai_prices_factor(ref: str) -> float | None:
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a core dependency
        return None
    provider, _, model = ref.rpartition("/")
    kwargs = {"provider_id": provider} if provider else {}
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    try:
        sync = calc_price(usage, model, **kwargs)
        batch = calc_price(usage, model, price_context={"processing": "batch"}, **kwargs)
    except Exception:  # genai-prices does not know the model
        return None
    sync_total, batch_total = float(sync.total_price), float(batch.total_price)
    if sync_total <= 0 or batch_total >= sync_total:
        return None
    return batch_total / sync_total
