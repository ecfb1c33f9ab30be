"""Recorded outputs: what real models said about real items, replayed offline.

The layout (one JSON object per item, with every model's answer under ``outputs``) is documented in
``docs/recorded-outputs.md``. Only ``id``, ``prompt`` and each output's ``answer`` are required; every
other field may be missing or null, and whatever needs it (pricing, accuracy) copes or says what to add.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smartmix.domain import Completion, Request
from smartmix.errors import ConfigError, DataError, PriceError, UnknownModelError
from smartmix.models import ModelSpec, Pool, estimate_tokens, lookup_price
from smartmix.tasks import Comparator, Item, read_jsonl

__all__ = [
    "RecordedArrays", "RecordedOutput", "RecordedOutputs", "ReplayBackend", "default_reference", "estimated_usage",
    "parse_item", "parse_output", "recorded_pool",
]


@dataclass(frozen=True)
class RecordedOutput:
    """One model's recorded answer to one item. Everything but ``answer`` may be unknown (None)."""

    answer: str | None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    confidence: float | None = None
    latency_ms: float | None = None
    correct: bool | None = None


@dataclass(frozen=True, eq=False)
class RecordedArrays:
    """Per-item, per-model numbers for fast simulation: row i is item i, column j is ``models[j]``.

    ``agree``: the model's answer agrees with the reference's (the reference's own column is all True).
    ``cost``: USD per call. ``confidence``: NaN where unknown. ``correct``: 1.0/0.0, NaN where unknown.
    ``item_ids``: the item of each row.
    """

    models: tuple[str, ...]
    agree: np.ndarray
    cost: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray
    item_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        shape = (self.agree.shape[0], len(self.models))
        for name in ("agree", "cost", "confidence", "correct"):
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"RecordedArrays.{name} has shape {getattr(self, name).shape}, expected {shape}"
                )
        if self.item_ids and len(self.item_ids) != shape[0]:
            raise ValueError(f"RecordedArrays.item_ids has {len(self.item_ids)} ids for {shape[0]} rows")

    @property
    def n_items(self) -> int:
        return int(self.agree.shape[0])

    def index(self, model: str) -> int:
        """The column of ``model``."""
        try:
            return self.models.index(model)
        except ValueError:
            raise UnknownModelError(
                f"model '{model}' is not in these arrays ({', '.join(self.models)})"
            ) from None


# ---------------------------------------------------------------------------------------------------
# Reading the file


def _number(value: Any, where: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{where}: '{name}' must be a number or null, got {value!r}")
    return float(value)


def _count(value: Any, where: str, name: str) -> int | None:
    number = _number(value, where, name)
    if number is None:
        return None
    if not number.is_integer() or number < 0:
        raise DataError(f"{where}: '{name}' must be a whole number of tokens or null, got {value!r}")
    return int(number)


def _flag(value: Any, where: str, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise DataError(f"{where}: '{name}' must be true, false or null, got {value!r}")


def parse_output(raw: Any, where: str) -> RecordedOutput:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected an object with at least an 'answer', got {type(raw).__name__}")
    if "answer" not in raw:
        raise DataError(
            f"{where}: no 'answer'. Every recorded output needs one (null if the model gave none)."
        )
    answer = raw["answer"]
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)  # a bare number in the file is still the model's text
    if answer is not None and not isinstance(answer, str):
        raise DataError(f"{where}: 'answer' must be text or null, got {answer!r}")
    return RecordedOutput(
        answer=answer,
        cost_usd=_number(raw.get("cost_usd"), where, "cost_usd"),
        input_tokens=_count(raw.get("input_tokens"), where, "input_tokens"),
        output_tokens=_count(raw.get("output_tokens"), where, "output_tokens"),
        confidence=_number(raw.get("confidence"), where, "confidence"),
        latency_ms=_number(raw.get("latency_ms"), where, "latency_ms"),
        correct=_flag(raw.get("correct"), where, "correct"),
    )


class RecordedOutputs:
    """Every model's recorded output for every item of one recorded-outputs file."""

    def __init__(self, path: Path, items: list[Item], outputs: dict[str, dict[str, RecordedOutput]]):
        self.path = path
        self.items = items
        self._outputs = outputs
        self._items_by_id = {item.id: item for item in items}
        seen: dict[str, None] = {}
        for per_model in outputs.values():
            seen.update(dict.fromkeys(per_model))
        self.models: list[str] = list(seen)

    @classmethod
    def load(cls, path: str | Path) -> RecordedOutputs:
        """Read one recorded-outputs ``.jsonl`` file (``.gz``/``.bz2`` compressed too)."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"recorded outputs file not found: {path}")
        if path.is_dir():
            found = sorted(p.name for p in path.glob("*.jsonl"))
            hint = f" (it holds: {', '.join(found)})" if found else ""
            raise DataError(f"{path} is a folder; give one recorded-outputs .jsonl file{hint}")
        base = path.name.lower().removesuffix(".gz").removesuffix(".bz2")
        if not base.endswith((".jsonl", ".ndjson")):
            raise DataError(f"recorded outputs must be a .jsonl file (one JSON object per line), got {path}")
        items: list[Item] = []
        outputs: dict[str, dict[str, RecordedOutput]] = {}
        for lineno, row in read_jsonl(path):
            where = f"{path}, line {lineno}"
            item = parse_item(row, where)
            if item.id in outputs:
                raise DataError(f"{where}: duplicate item id '{item.id}'; every line needs its own id")
            raw_outputs = row.get("outputs")
            if not isinstance(raw_outputs, dict) or not raw_outputs:
                raise DataError(
                    f"{where}: 'outputs' must be a non-empty object mapping each model name to its output"
                )
            outputs[item.id] = {
                str(model): parse_output(raw, f"{where}, outputs['{model}']")
                for model, raw in raw_outputs.items()
            }
            items.append(item)
        if not items:
            raise DataError(f"{path} holds no recorded items (the file is empty)")
        return cls(path, items, outputs)

    # -- lookups ------------------------------------------------------------------------------------

    def item(self, item_id: str) -> Item:
        try:
            return self._items_by_id[item_id]
        except KeyError:
            raise DataError(f"item '{item_id}' is not in the recorded file {self.path}") from None

    def has(self, item_id: str, model: str) -> bool:
        return model in self._outputs.get(item_id, {})

    def output(self, item_id: str, model: str) -> RecordedOutput:
        per_model = self._outputs.get(item_id)
        if per_model is None:
            raise DataError(f"item '{item_id}' is not in the recorded file {self.path}")
        if model not in per_model:
            self._check_models([model])
            raise DataError(
                f"item '{item_id}' has no recorded output of model '{model}' in {self.path}; "
                f"it has: {', '.join(per_model)}"
            )
        return per_model[model]

    def default_reference(self) -> str:
        """The model with the highest mean recorded cost (the last model listed if no cost is known)."""
        return default_reference(self.models, {m: self._mean_cost(m) for m in self.models})

    def pool(
        self, reference: str | None = None, prices: Mapping[str, tuple[float, float]] | None = None
    ) -> Pool:
        """A pool of every recorded model, cheapest first by mean recorded cost (see :func:`recorded_pool`)."""
        reference = reference or self.default_reference()
        self._check_models([reference])
        return recorded_pool({m: self._mean_cost(m) for m in self.models}, reference, prices)

    def _mean_cost(self, model: str) -> float:
        costs = [
            o.cost_usd for per in self._outputs.values() if (o := per.get(model)) and o.cost_usd is not None
        ]
        return sum(costs) / len(costs) if costs else math.nan

    def _check_models(self, models: Sequence[str]) -> None:
        for m in models:
            if m not in self.models:
                raise UnknownModelError(
                    f"model '{m}' is not in the recorded outputs {self.path}; recorded models: "
                    f"{', '.join(self.models)}"
                )

    # -- arrays -------------------------------------------------------------------------------------

    def call_cost(self, item: Item, model: str, out: RecordedOutput, pool: Pool | None) -> float:
        """The recorded cost, else the pool's price for the recorded (or estimated) token counts."""
        if out.cost_usd is not None:
            return out.cost_usd
        if pool is None or model not in pool:
            raise PriceError(
                f"no recorded cost_usd for model {model} on item '{item.id}' in {self.path}, and no price "
                f"for it; give one with --price {model}=IN/OUT (USD per million tokens) or in the config file"
            )
        n_in, n_out = estimated_usage(item, out)
        return pool.spec(model).cost(n_in, n_out)

    def arrays(
        self, models: Sequence[str], reference: str, comparator: Comparator, pool: Pool | None = None
    ) -> RecordedArrays:
        """Agreement with ``reference``, cost, confidence and correctness per item for ``models``."""
        models = tuple(models)
        if not models:
            raise ConfigError("arrays() needs at least one model")
        if len(set(models)) != len(models):
            raise ConfigError(f"a model is named twice in {list(models)}")
        self._check_models([*models, reference])
        shape = (len(self.items), len(models))
        agree = np.zeros(shape, dtype=bool)
        cost = np.empty(shape, dtype=float)
        confidence = np.full(shape, np.nan)
        correct = np.full(shape, np.nan)
        for m in {*models, reference}:
            self._require_complete(m)
        for i, item in enumerate(self.items):
            per_model = self._outputs[item.id]
            ref_answer = per_model[reference].answer
            for j, m in enumerate(models):
                out = per_model[m]
                agree[i, j] = m == reference or comparator.agree(out.answer, ref_answer)
                cost[i, j] = self.call_cost(item, m, out, pool)
                if out.confidence is not None:
                    confidence[i, j] = out.confidence
                if out.correct is not None:
                    correct[i, j] = float(out.correct)
        return RecordedArrays(models, agree, cost, confidence, correct, tuple(it.id for it in self.items))

    def _require_complete(self, model: str) -> None:
        missing = [item.id for item in self.items if model not in self._outputs[item.id]]
        if missing:
            raise DataError(
                f"model '{model}' has no recorded output for item '{missing[0]}'"
                f"{f' and {len(missing) - 1} other items' if len(missing) > 1 else ''} in {self.path}; "
                "use models recorded for every item, or complete the file"
            )


def default_reference(models: Sequence[str], mean_cost: Mapping[str, float]) -> str:
    """The model with the highest mean recorded cost (NaN: none recorded); the last one listed if none is known."""
    means = {m: c for m in models if not math.isnan(c := mean_cost[m])}
    if not means:
        return models[-1]
    return max(means, key=means.__getitem__)


def recorded_pool(
    mean_cost: Mapping[str, float], reference: str, prices: Mapping[str, tuple[float, float]] | None = None
) -> Pool:
    """A pool of the recorded models (``mean_cost``: each one's mean recorded cost per call, NaN if none).

    Prices: given ``prices`` (per token), else the mean recorded cost per call (``price_source`` is
    "recorded"), else genai-prices; a model with none of these stays unpriced.
    """
    prices = prices or {}
    specs = []
    for m, mean in mean_cost.items():
        if m in prices:
            specs.append(ModelSpec(m, prices[m][0], prices[m][1], price_source="given"))
        elif not math.isnan(mean):
            specs.append(ModelSpec(m, call_price=mean, price_source="recorded"))
        elif (found := lookup_price(m)) is not None:
            specs.append(ModelSpec(m, found[0], found[1], price_source="genai-prices"))
        else:
            specs.append(ModelSpec(m, price_source="none"))
    return Pool(specs, reference)


def parse_item(row: dict[str, Any], where: str) -> Item:
    item_id = row.get("id")
    if item_id is None or isinstance(item_id, dict | list) or not str(item_id).strip():
        raise DataError(f"{where}: no 'id'. Every recorded item needs a unique id.")
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        raise DataError(f"{where}: 'prompt' must be the user message as text, got {prompt!r}")
    fields = {k: v for k, v in row.items() if k != "outputs"}
    fields["id"] = str(item_id)
    for name in ("system", "gold", "meta"):
        fields.setdefault(name, None)
    return Item(id=str(item_id), fields=fields)


def estimated_usage(item: Item, out: RecordedOutput) -> tuple[int, int]:
    """Recorded token counts, each estimated from the text (4 characters a token) when missing."""
    n_in = out.input_tokens
    if n_in is None:
        texts = [item.fields.get("system"), item.fields.get("prompt")]
        n_in = estimate_tokens("\n".join(t for t in texts if isinstance(t, str)))
    n_out = out.output_tokens if out.output_tokens is not None else estimate_tokens(out.answer)
    return n_in, n_out


# ---------------------------------------------------------------------------------------------------
# The backend


@dataclass(eq=False)
class ReplayBackend:
    """Answers requests with recorded outputs: no network, no waiting, exactly what was recorded.

    Items are found by ``request.item_id``, else by the exact user message (and system message when
    several items share a prompt). Missing token counts are estimated from the text (flagged in
    ``Completion.extra["tokens_estimated"]``); a missing cost is priced with ``pool`` when given — the
    same way :meth:`RecordedOutputs.arrays` does — and left None otherwise, for the engine to price.
    """

    recorded: RecordedOutputs
    pool: Pool | None = None
    _by_prompt: dict[tuple[str | None, str], str] = field(init=False, repr=False)
    _by_user: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_prompt = {}
        self._by_user = {}
        for item in self.recorded.items:
            system = item.fields.get("system")
            key = (system if isinstance(system, str) else None, item.fields["prompt"])
            self._by_prompt.setdefault(key, item.id)
            self._by_user.setdefault(item.fields["prompt"], item.id)

    def _find_item(self, request: Request) -> Item:
        if request.item_id is not None and request.item_id in self.recorded._items_by_id:
            return self.recorded.item(request.item_id)
        user = next((m.content for m in reversed(request.messages) if m.role == "user"), None)
        system = next((m.content for m in request.messages if m.role == "system"), None)
        if user is not None:
            item_id = self._by_prompt.get((system, user)) or self._by_user.get(user)
            if item_id is not None:
                return self.recorded.item(item_id)
        if request.item_id is not None:
            raise DataError(
                f"item '{request.item_id}' is not in the recorded file {self.recorded.path}, "
                "and no recorded item has the same prompt"
            )
        shown = (user or "")[:80]
        raise DataError(
            f"no item in the recorded file {self.recorded.path} has the prompt {shown!r}; replay needs the "
            "exact recorded prompt (use the recorded template) or the item id"
        )

    answers_per_item = True  # the answer depends on the item id, not only on the prompt

    def endpoint(self, model: str) -> str:
        """The recorded file that answers (part of the journal's key)."""
        return f"replay {Path(self.recorded.path).resolve()}"

    async def complete(self, request: Request) -> Completion:
        item = self._find_item(request)
        out = self.recorded.output(item.id, request.model)
        n_in, n_out = estimated_usage(item, out)
        cost = out.cost_usd
        if cost is None and self.pool is not None and request.model in self.pool:
            cost = self.pool.spec(request.model).cost(n_in, n_out)
        return Completion(
            model=request.model,
            text=out.answer if out.answer is not None else "",
            input_tokens=n_in,
            output_tokens=n_out,
            cost_usd=cost,
            confidence=out.confidence,
            latency_ms=out.latency_ms,
            extra={
                "item_id": item.id,
                "correct": out.correct,
                "tokens_estimated": out.input_tokens is None or out.output_tokens is None,
                "cost_recorded": out.cost_usd is not None,
            },
        )

    async def aclose(self) -> None:
        return None
