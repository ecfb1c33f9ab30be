"""Job files (TOML): the models and how to reach them, the task, the guarantee. See docs/config.md."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from smartmix import defaults
from smartmix.backends.base import Backend
from smartmix.config_schema import (
    CascadeRoute,
    GuaranteeTable,
    JobFile,
    ModelRoute,
    ModelTable,
    Route,
    RouterRoute,
    RunTable,
    ServerTable,
    TaskTable,
)
from smartmix.domain import Completion, Request
from smartmix.errors import ConfigError, UnknownModelError
from smartmix.models import ModelSpec, Pool, lookup_price

PER_MILLION = 1e-6
ModelConfig = ModelTable  # the name the rest of the code knows a model's settings by

__all__ = ["JobConfig", "ModelConfig", "PoolBackend", "build_backend", "build_pool", "load_config", "parse_config"]


@dataclass
class JobConfig:
    """A validated job file, flattened to the settings a run reads (defaults from :mod:`smartmix.defaults`)."""

    models: dict[str, ModelConfig]
    reference: str | None = None
    template: str | None = None
    system: str | None = None
    labels: list[str] | None = None
    max_tokens: int | None = defaults.MAX_TOKENS
    id_field: str = defaults.ID_FIELD
    compare: str | None = None  # a comparator name (smartmix.comparators); None: label with labels, else exact
    compare_options: dict[str, Any] = field(default_factory=dict)
    target: float = defaults.TARGET
    confidence: float = defaults.CONFIDENCE
    method: str = defaults.METHOD
    seed: int = defaults.SEED
    concurrency: int = defaults.CONCURRENCY
    max_cost: float | None = None
    run_dir: str = defaults.RUN_DIR
    calibration: str | None = None
    mode: str = "sync"
    routes: dict[str, Route] = field(default_factory=dict)
    server: ServerTable = field(default_factory=ServerTable)
    path: Path | None = None

    @property
    def extra(self) -> dict[str, Any]:
        """``routes`` and ``server`` as plain tables (validated, defaults filled in; ``lambda`` by its TOML name)."""
        return {
            "routes": {n: r.model_dump(by_alias=True, exclude_none=True) for n, r in self.routes.items()},
            "server": self.server.model_dump(exclude_none=True),
        }

    def to_public_dict(self) -> dict[str, Any]:
        """What the answers depend on, without anything secret (keys are never in it: only env var names)."""
        public = {
            "models": {n: {"name": n, **m.model_dump()} for n, m in self.models.items()},
            "reference": self.reference,
            "template": self.template,
            "system": self.system,
            "labels": self.labels,
            "max_tokens": self.max_tokens,
            "target": self.target,
            "confidence": self.confidence,
            "method": self.method,
        }
        # only when set, so that job files without them keep their run ids
        optional = {"compare": self.compare, "compare_options": self.compare_options, "calibration": self.calibration}
        public.update({k: v for k, v in optional.items() if v})
        return public


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
    """Validate a job file's tables against :class:`~smartmix.config_schema.JobFile`; errors are one line."""
    where = f" in {path}" if path else ""
    models_raw = raw.get("models")
    if not isinstance(models_raw, Mapping) or not models_raw:
        raise ConfigError(f"no models{where}: add a [models.NAME] table per model (see docs/config.md)")
    for name, spec in models_raw.items():
        nested = [k for k, v in spec.items() if isinstance(v, Mapping)] if isinstance(spec, Mapping) else []
        if nested:  # [models.llama-3.1-8b] is TOML for models -> "llama-3" -> "1-8b"
            raise ConfigError(
                f"[models.{name}]{where} holds a table '{nested[0]}': a model name with a dot must be quoted, "
                f'e.g. [models."{name}.{nested[0]}"]'
            )
    try:
        job = JobFile.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(explain(exc, where)) from None
    reference = job.reference_name()
    if reference is not None and reference not in job.models:
        raise UnknownModelError(f"reference '{reference}'{where} is not among the models: {', '.join(job.models)}")
    return JobConfig(
        models=dict(job.models),
        reference=reference,
        template=job.task.template,
        system=job.task.system,
        labels=job.task.labels,
        max_tokens=job.task.max_tokens,
        id_field=job.task.id_field,
        compare=job.task.compare,
        compare_options=job.task.compare_options,
        target=job.guarantee.target,
        confidence=job.guarantee.confidence,
        method=job.guarantee.method,
        seed=job.run.seed,
        concurrency=job.run.concurrency,
        max_cost=job.run.max_cost,
        run_dir=job.run.dir,
        calibration=job.run.calibration,
        mode=job.run.mode,
        routes=dict(job.routes),
        server=job.server,
        path=path,
    )


_ROUTE_TAGS = {"model", "cascade", "router"}


def _table_and_key(loc: tuple[Any, ...]) -> tuple[str, str | None]:
    """``("models", "gpt-4o", "max_cots")`` -> ``("[models.gpt-4o]", "max_cots")``; a route's union tag dropped."""
    parts = [str(p) for p in loc]
    if len(parts) >= 3 and parts[0] == "routes" and parts[2] in _ROUTE_TAGS:
        del parts[2]
    if not parts:
        return "the job file", None
    if parts[0] in ("models", "routes") and len(parts) >= 2:
        table, rest = f"[{parts[0]}.{parts[1]}]", parts[2:]
    elif parts[0] in JobFile.model_fields and parts[0] != "reference" and len(parts) >= 1:
        table, rest = f"[{parts[0]}]", parts[1:]
    else:
        table, rest = "the top level", parts
    if rest and rest[0] == "compare_options":
        table, rest = "[task.compare_options]", rest[1:]
    if len(rest) > 1 and rest[-1].isdigit():  # labels.1 -> labels
        rest = rest[:-1]
    return table, ".".join(rest) or None


def _allowed(table: str, loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] | None = None
    if table == "the top level":
        model = JobFile
    elif table.startswith("[models."):
        model = ModelTable
    elif table.startswith("[routes."):
        model = {"cascade": CascadeRoute, "router": RouterRoute}.get(str(loc[2]) if len(loc) > 2 else "", ModelRoute)
    else:
        model = {"[task]": TaskTable, "[guarantee]": GuaranteeTable, "[run]": RunTable, "[server]": ServerTable}.get(table)
    if model is None:
        return []
    return sorted(f.alias or n for n, f in model.model_fields.items())


def explain(exc: ValidationError, where: str = "") -> str:
    """The first problem of a validation error as one line: which table and key, what is wrong, what to do."""
    error = exc.errors(include_url=False)[0]
    loc, kind = tuple(error["loc"]), error["type"]
    table, key = _table_and_key(loc)
    if kind == "extra_forbidden":
        allowed = _allowed(table, loc)
        bad = key or "?"
        if table == "the top level":
            return (
                f"unknown section '{bad}'{where}; a job file has: {', '.join(allowed)} (see docs/config.md)"
            )
        close = difflib.get_close_matches(bad.rsplit(".", 1)[-1], allowed, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        if "key" in bad.lower() and not bad.endswith("_env"):
            hint += (
                " API keys never go in the file: put the key in an environment variable and name it with "
                "api_key_env."
            )
        return f"{table}{where}: unknown key '{bad}'; allowed: {', '.join(allowed)}.{hint}"
    if kind == "missing":
        return f"{table}{where}: {key} is required (see docs/config.md)"
    message = error["msg"].removeprefix("Value error, ")
    if kind in ("model_type", "model_attributes_type", "dict_type") and key is None:
        return f"{table}{where} must be a table, not {error.get('input')!r}"
    if key is None:
        return f"{message}{where}" if table == "the job file" else f"{table}{where}: {message}"
    if kind == "value_error":  # the message names the key; never echo the value: api_key_env may hold a key
        return f"{table}{where}: {message}"
    return f"{table}{where}: {key}: {message}, not {error.get('input')!r}"


def build_pool(config: JobConfig, reference: str | None = None, price_overrides: Mapping | None = None) -> Pool:
    reference = reference or config.reference
    if reference is None:
        raise ConfigError("no reference model: set reference = \"NAME\" in the config, or pass --reference NAME")
    specs = []
    for name, m in config.models.items():
        if price_overrides and name in price_overrides:
            p_in, p_out = price_overrides[name]
            specs.append(ModelSpec(name, p_in, p_out, price_source="given", batch_price_factor=m.batch_price_factor))
        elif m.input_price is not None or m.output_price is not None or m.call_price is not None:
            specs.append(
                ModelSpec(
                    name,
                    None if m.input_price is None else m.input_price * PER_MILLION,
                    None if m.output_price is None else m.output_price * PER_MILLION,
                    call_price=m.call_price,
                    price_source="given",
                    batch_price_factor=m.batch_price_factor,
                )
            )
        elif (found := lookup_price(ref := m.litellm or m.provider_model or name)) is not None:
            specs.append(ModelSpec(name, found[0], found[1], price_source="genai-prices", price_ref=ref,
                                   batch_price_factor=m.batch_price_factor))
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

    def endpoint(self, model: str) -> str | None:
        from smartmix.backends.base import endpoint_of

        backend = self.backends.get(model)
        return None if backend is None else endpoint_of(backend, model)

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
