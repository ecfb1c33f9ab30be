"""Job files (TOML): the models and how to reach them, the task, the guarantee. See docs/config.md."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartmix.backends.base import Backend
from smartmix.domain import Completion, Request
from smartmix.errors import ConfigError, UnknownModelError
from smartmix.models import ModelSpec, Pool, lookup_price

PER_MILLION = 1e-6
_SECTIONS = {"models", "task", "guarantee", "run", "routes", "server"}

# What each key must hold: a TOML typo or a wrong type is a one-line error here, not a traceback later (or,
# worse, silently wrong: labels = "yes" would be the labels y, e, s; a misspelt max_cost no cap at all).
_TEXT, _PRICE, _COUNT, _POSITIVE = "text", "a number >= 0", "a whole number >= 1", "a number > 0"
_TEXTS, _WHOLE, _SHARE, _PROBABILITY = "a list of text", "a whole number", "a number in (0, 1]", "a number in (0, 1)"
_MODEL_TYPES = {
    "base_url": _TEXT, "provider_model": _TEXT, "litellm": _TEXT, "api_key_env": _TEXT, "api": _TEXT,
    "input_price": _PRICE, "output_price": _PRICE, "call_price": _PRICE, "max_concurrency": _COUNT,
    "requests_per_minute": _POSITIVE, "timeout_s": _POSITIVE, "max_attempts": _COUNT,
}
_MODEL_KEYS = set(_MODEL_TYPES)
_SECTION_TYPES = {
    "task": {"template": _TEXT, "system": _TEXT, "labels": _TEXTS, "max_tokens": _COUNT, "id_field": _TEXT},
    "guarantee": {"target": _SHARE, "confidence": _PROBABILITY, "method": _TEXT, "reference": _TEXT},
    "run": {"seed": _WHOLE, "concurrency": _COUNT, "max_cost": _PRICE, "dir": _TEXT},
}


def _fits(value: Any, kind: str) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == _TEXT:
        return isinstance(value, str)
    if kind == _TEXTS:
        return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)
    if kind == _WHOLE:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _COUNT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if not number:
        return False
    if kind == _PRICE:
        return value >= 0
    if kind == _POSITIVE:
        return value > 0
    if kind == _SHARE:
        return 0 < value <= 1
    return 0 < value < 1  # _PROBABILITY


def _check_table(table: Mapping[str, Any], types: Mapping[str, str], name: str, where: str) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{name}]{where} must be a table")
    bad = sorted(set(table) - set(types))
    if bad:
        hint = ""
        if any("key" in k.lower() and not k.endswith("_env") for k in bad):
            hint = " API keys never go in the file: put the key in an environment variable and name it with api_key_env."
        raise ConfigError(f"[{name}]{where}: unknown key(s) {bad}; allowed: {sorted(types)}.{hint}")
    for key, value in table.items():
        if not _fits(value, types[key]):
            raise ConfigError(f"[{name}]{where}: {key} must be {types[key]}, not {value!r}")


@dataclass
class ModelConfig:
    name: str
    base_url: str | None = None
    provider_model: str | None = None
    litellm: str | None = None  # a LiteLLM model string: routes this model through the litellm backend
    api_key_env: str | None = None
    api: str = "chat"
    input_price: float | None = None  # USD per million tokens
    output_price: float | None = None
    call_price: float | None = None  # USD per call
    max_concurrency: int = 16
    requests_per_minute: float | None = None
    timeout_s: float = 60.0
    max_attempts: int = 6


@dataclass
class JobConfig:
    models: dict[str, ModelConfig]
    reference: str | None = None
    template: str | None = None
    system: str | None = None
    labels: list[str] | None = None
    max_tokens: int | None = 16
    id_field: str = "id"
    target: float = 0.9
    confidence: float = 0.95
    method: str = "mix"
    seed: int = 0
    concurrency: int = 32
    max_cost: float | None = None
    run_dir: str = "runs"
    extra: dict[str, Any] = field(default_factory=dict)  # sections other parts read (routes, server)
    path: Path | None = None

    def to_public_dict(self) -> dict[str, Any]:
        """The config without anything secret (keys are never in it: only env var names)."""
        return {
            "models": {n: vars(m) for n, m in self.models.items()},
            "reference": self.reference,
            "template": self.template,
            "system": self.system,
            "labels": self.labels,
            "max_tokens": self.max_tokens,
            "target": self.target,
            "confidence": self.confidence,
            "method": self.method,
        }


def load_config(path: str | Path) -> JobConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not valid TOML: {exc}") from None
    return parse_config(raw, path)


def parse_config(raw: Mapping[str, Any], path: Path | None = None) -> JobConfig:
    where = f" in {path}" if path else ""
    unknown = set(raw) - _SECTIONS - {"reference"}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}{where}; expected: {sorted(_SECTIONS)}")
    models_raw = raw.get("models")
    if not isinstance(models_raw, Mapping) or not models_raw:
        raise ConfigError(f"no models{where}: add a [models.NAME] table per model (see docs/config.md)")
    models = {}
    reference = raw.get("reference") or raw.get("guarantee", {}).get("reference")
    for name, spec in models_raw.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"[models.{name}]{where} must be a table")
        spec = dict(spec)
        if spec.pop("reference", False):
            reference = reference or name
        nested = [k for k, v in spec.items() if isinstance(v, Mapping)]
        if nested:  # [models.llama-3.1-8b] is TOML for models -> "llama-3" -> "1-8b"
            raise ConfigError(
                f"[models.{name}]{where} holds a table '{nested[0]}': a model name with a dot must be quoted, "
                f'e.g. [models."{name}.{nested[0]}"]'
            )
        _check_table(spec, _MODEL_TYPES, f"models.{name}", where)
        env = spec.get("api_key_env")
        if env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):  # never echo it: it may be a key
            raise ConfigError(
                f"[models.{name}]{where}: api_key_env must be the NAME of an environment variable (like "
                "OPENAI_API_KEY), not the key itself. Put the key in that variable: export OPENAI_API_KEY=..."
            )
        if spec.get("api", "chat") not in ("chat", "completions"):
            raise ConfigError(f"[models.{name}]{where}: api must be 'chat' or 'completions'")
        models[name] = ModelConfig(name=name, **spec)
    if reference is not None and reference not in models:
        raise UnknownModelError(f"reference '{reference}'{where} is not among the models: {', '.join(models)}")
    task = raw.get("task", {})
    guarantee = raw.get("guarantee", {})
    run = raw.get("run", {})
    for section, table in (("task", task), ("guarantee", guarantee), ("run", run)):
        _check_table(table, _SECTION_TYPES[section], section, where)
    if not isinstance(reference, str | None):
        raise ConfigError(f"reference{where} must be a model name (text), not {reference!r}")
    return JobConfig(
        models=models,
        reference=reference,
        template=task.get("template"),
        system=task.get("system"),
        labels=task.get("labels"),
        max_tokens=task.get("max_tokens", 16),
        id_field=task.get("id_field", "id"),
        target=guarantee.get("target", 0.9),
        confidence=guarantee.get("confidence", 0.95),
        method=guarantee.get("method", "mix"),
        seed=run.get("seed", 0),
        concurrency=run.get("concurrency", 32),
        max_cost=run.get("max_cost"),
        run_dir=run.get("dir", "runs"),
        extra={k: raw[k] for k in ("routes", "server") if k in raw},
        path=path,
    )


def build_pool(config: JobConfig, reference: str | None = None, price_overrides: Mapping | None = None) -> Pool:
    reference = reference or config.reference
    if reference is None:
        raise ConfigError("no reference model: set reference = \"NAME\" in the config, or pass --reference NAME")
    specs = []
    for name, m in config.models.items():
        if price_overrides and name in price_overrides:
            p_in, p_out = price_overrides[name]
            specs.append(ModelSpec(name, p_in, p_out, price_source="given"))
        elif m.input_price is not None or m.output_price is not None or m.call_price is not None:
            specs.append(
                ModelSpec(
                    name,
                    None if m.input_price is None else m.input_price * PER_MILLION,
                    None if m.output_price is None else m.output_price * PER_MILLION,
                    call_price=m.call_price,
                    price_source="given",
                )
            )
        elif (found := lookup_price(m.litellm or m.provider_model or name)) is not None:
            specs.append(ModelSpec(name, found[0], found[1], price_source="genai-prices"))
        else:
            from smartmix.errors import PriceError

            raise PriceError(
                f"no price for model {name}: genai-prices does not know it. Add input_price and output_price "
                f"(USD per million tokens) to [models.{name}], or pass --price {name}=IN/OUT"
            )
    return Pool(specs, reference)


class PoolBackend:
    """Dispatches each request to the backend that serves its model (OpenAI-compatible or litellm)."""

    def __init__(self, backends: Mapping[str, Backend]):
        self.backends = dict(backends)

    async def complete(self, request: Request) -> Completion:
        try:
            backend = self.backends[request.model]
        except KeyError:
            raise UnknownModelError(f"no backend serves model '{request.model}'") from None
        return await backend.complete(request)

    async def aclose(self) -> None:
        for backend in {id(b): b for b in self.backends.values()}.values():
            await backend.aclose()


def build_backend(config: JobConfig) -> Backend:
    from smartmix.backends.openai_compat import EndpointConfig, OpenAIBackend

    plain, via_litellm = {}, {}
    for name, m in config.models.items():
        endpoint = EndpointConfig(
            model=name,
            provider_model=m.litellm or m.provider_model,
            base_url=m.base_url,
            api_key_env=m.api_key_env,
            api=m.api,
            max_concurrency=m.max_concurrency,
            requests_per_minute=m.requests_per_minute,
            timeout_s=m.timeout_s,
            max_attempts=m.max_attempts,
        )
        (via_litellm if m.litellm else plain)[name] = endpoint
    backends: dict[str, Backend] = {}
    if plain:
        shared = OpenAIBackend(plain)
        backends.update({name: shared for name in plain})
    if via_litellm:
        from smartmix.backends.litellm_backend import LiteLLMBackend

        shared_l = LiteLLMBackend(via_litellm)
        backends.update({name: shared_l for name in via_litellm})
    return PoolBackend(backends)
