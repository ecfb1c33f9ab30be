"""The job file's schema: one pydantic model per table, unknown keys refused, each default from
:mod:`smartmix.defaults`. docs/config.md's tables are generated from these models
(``python -m smartmix.config_docs``), so the descriptions here are the documentation."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from smartmix import defaults

__all__ = [
    "COMPARATORS",
    "CascadeRoute",
    "GuaranteeTable",
    "JobFile",
    "ModelRoute",
    "ModelTable",
    "RouterRoute",
    "RunTable",
    "ServerTable",
    "TaskTable",
    "Route",
]

# The names smartmix.comparators.make_comparator knows.
COMPARATORS = ("exact", "label", "numeric", "regex", "choice", "json", "semantic")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _doc(description: str, default: str | None = None) -> dict[str, Any]:
    """Field(...) keywords: the description, and how the default reads in the docs when not a literal."""
    return {"description": description, "json_schema_extra": {"doc_default": default} if default else None}


class Table(BaseModel):
    """A TOML table: unknown keys are errors, types are checked strictly (no "5" for 5)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, frozen=False)


def _env_name(value: str | None, where: str) -> str | None:
    if value is not None and not _ENV_NAME.fullmatch(value):  # never echo it: it may be the key itself
        raise ValueError(
            f"{where} must be the NAME of an environment variable (like OPENAI_API_KEY), not the key itself. "
            "Put the key in that variable: export OPENAI_API_KEY=..."
        )
    return value


class ModelTable(Table):
    """``[models.NAME]``: one table per model."""

    _name: str = PrivateAttr("")  # the table's name, set on load
    base_url: str | None = Field(
        None,
        **_doc(
            "any OpenAI-compatible endpoint: vLLM, llama.cpp, Ollama, Together, OpenRouter, ... (usually ends "
            "in `/v1`)",
            f"`{defaults.BASE_URL}`",
        ),
    )
    provider_model: str | None = Field(
        None, **_doc("the model name sent to the provider, when it differs from `NAME`", "`NAME`")
    )
    litellm: str | None = Field(
        None,
        description=(
            'a LiteLLM model string (e.g. `"anthropic/claude-3-5-haiku-latest"`): the model is called through '
            "litellm (`pip install 'smartmix[litellm]'`), for providers that do not speak the OpenAI API; "
            "`base_url` then becomes litellm's `api_base`"
        ),
    )
    api_key_env: str | None = Field(
        None,
        **_doc(
            "the **name** of the environment variable holding the key. Leave it out for local servers that "
            "need no key (for a `litellm` model, litellm then finds the provider's usual variable itself)",
            "— (no key)",
        ),
    )
    api: Literal["chat", "completions"] = Field(
        defaults.API,
        description=(
            '`"chat"` (`/chat/completions`) or `"completions"` (`/completions`: system message, then the '
            "prompt, joined by a blank line)"
        ),
    )
    input_price: float | None = Field(
        None, ge=0, description="USD per **million** input tokens, as providers list them; `0` is allowed"
    )
    output_price: float | None = Field(None, ge=0, description="USD per **million** output tokens")
    call_price: float | None = Field(None, ge=0, description="USD per call, for providers that bill per request")
    batch_price_factor: float | None = Field(
        None,
        gt=0,
        le=1,
        **_doc(
            "price of a provider batch call ÷ price of the same synchronous call (`--mode batch`)",
            "genai-prices' batch price where it knows one, else 1",
        ),
    )
    max_concurrency: int = Field(
        defaults.MODEL_CONCURRENCY, ge=1, description="requests in flight to this model at once"
    )
    requests_per_minute: float | None = Field(
        None,
        gt=0,
        **_doc(
            "starts per minute for this model (a token bucket; a `429` with `Retry-After` also pauses the "
            "model that long)",
            "unlimited",
        ),
    )
    timeout_s: float = Field(defaults.TIMEOUT_S, gt=0, description="seconds per attempt")
    max_attempts: int = Field(
        defaults.MAX_ATTEMPTS,
        ge=1,
        description=(
            "attempts in all, first included. Retried: 408, 409, 429, 5xx, timeouts, dropped connections, "
            "bodies that are not a completion; waits grow exponentially with full jitter (0.5 s base, 30 s "
            "cap) or follow `Retry-After` (capped at 60 s). Not retried: 400, 401, 403, 404 and a 429 saying "
            "the account is out of quota — the same request would fail again"
        ),
    )
    reference: bool = Field(
        False, exclude=True, description="`true` makes this model the reference (instead of the top-level key)"
    )

    @property
    def name(self) -> str:
        return self._name

    @field_validator("api_key_env")
    @classmethod
    def _api_key_env(cls, value: str | None) -> str | None:
        return _env_name(value, "api_key_env")


class TaskTable(Table):
    """``[task]``: what to ask about each item, and how answers are compared."""

    template: str | None = Field(
        None,
        **_doc(
            "the user message; `{column}` is filled from each item's fields (`{meta[lang]}` reaches inside a "
            "JSON object). An empty cell renders as an empty string; a column the items do not have is an "
            "error before any call. Write a literal brace as `{{` or `}}`",
            "(required by `run`)",
        ),
    )
    system: str | None = Field(None, description="a system message, with the same `{column}` fields")
    labels: list[str] | None = Field(
        None,
        description=(
            "for classification: each answer is mapped to one of these (case, punctuation and surrounding "
            "words are forgiven; an answer matching none counts as disagreeing). Without labels, answers are "
            "compared as text after normalisation"
        ),
    )
    max_tokens: int = Field(
        defaults.MAX_TOKENS,
        ge=1,
        description="output tokens per answer (also the worst case `--max-cost` and `preview` assume)",
    )
    id_field: str = Field(
        defaults.ID_FIELD,
        description=(
            "the column that names each item; without such a column, items are numbered `row-0`, `row-1`, ..."
        ),
    )
    compare: Literal[COMPARATORS] | None = Field(  # type: ignore[valid-type]
        None,
        **_doc(
            "how two answers are judged equal: " + ", ".join(f"`{c}`" for c in COMPARATORS) + ". An answer "
            "that cannot be parsed counts as disagreeing",
            '`"label"` with `labels`, else `"exact"`',
        ),
    )
    compare_options: dict[str, Any] = Field(
        default_factory=dict,
        **_doc(
            "a table of options for the comparator, e.g. `[task.compare_options]` with `tolerance = 0.01` "
            "for `numeric` or `pattern = '...'` for `regex`",
            "none",
        ),
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not all(label.strip() for label in value)):
            raise ValueError('labels must be a list of non-blank texts, e.g. labels = ["positive", "negative"]')
        return value

    @model_validator(mode="after")
    def _options_need_a_comparator(self) -> TaskTable:
        if self.compare_options and self.compare is None:
            raise ValueError("compare_options is set but compare is not: add compare = \"NAME\" to [task]")
        return self


class GuaranteeTable(Table):
    """``[guarantee]``: what the run guarantees."""

    target: float = Field(
        defaults.TARGET,
        gt=0,
        le=1,
        description="at least this fraction of all answers equal what the reference would have said ...",
    )
    confidence: float = Field(
        defaults.CONFIDENCE, gt=0, lt=1, description="... with at least this probability (1 − δ)"
    )
    method: str = Field(
        defaults.METHOD,
        description=(
            "`reference`, `exhaustive`, `efficient`, `mix`, `cascade`, `router` (guaranteed); `paper`, "
            "`margin` (baselines without a guarantee). `smartmix methods` lists them"
        ),
    )
    reference: str | None = Field(
        None, **_doc("the reference model, if not given by the top-level `reference`", "—")
    )


class RunTable(Table):
    """``[run]``: how this run is carried out (not part of what the answers depend on)."""

    seed: int = Field(
        defaults.SEED, description="the same seed, data and job give the same run — and rerunning resumes it"
    )
    concurrency: int = Field(
        defaults.CONCURRENCY,
        ge=1,
        description=(
            "calls in flight at once, all models together (each model also keeps to its `max_concurrency`)"
        ),
    )
    max_cost: float | None = Field(
        None, ge=0, **_doc("hard cap in USD on what this run pays (see below)", "none")
    )
    dir: str = Field(
        defaults.RUN_DIR, description="where the journal and the outputs go, relative to the current directory"
    )
    calibration: str | None = Field(
        None,
        **_doc(
            "past data the policy may learn its plan from: a recorded-outputs JSONL file or a run journal "
            "(relative to the current directory)",
            "none",
        ),
    )
    mode: Literal["sync", "batch", "ray"] = Field(
        "sync",
        description=(
            'how the application phase runs: `"sync"` (concurrent calls), `"batch"` (provider batch jobs: about '
            'half price, answers within the provider\'s window) or `"ray"` (a Ray Data pipeline); see docs/scale.md'
        ),
    )


class ModelRoute(Table):
    """``[routes.NAME]`` with ``type = "model"``: a fixed model."""

    type: Literal["model"] = Field("model", description='`"model"`, `"cascade"` or `"router"`')
    model: str | None = Field(None, **_doc("the model this route calls", "`NAME`"))


class CascadeRoute(Table):
    """``[routes.NAME]`` with ``type = "cascade"``: cheap models first, the reference when none is sure."""

    type: Literal["cascade"] = Field(description='`"cascade"`')
    chain: list[str] = Field(
        min_length=1,
        **_doc(
            "the models asked in order (with first-token logprobs) before the reference", "(required)"
        ),
    )
    threshold: float = Field(
        defaults.CASCADE_THRESHOLD,
        description=(
            "an answer is kept when its score (1 − p₂/p₁ of the first token) is above this; otherwise "
            "the next model, and finally the reference, answers"
        ),
    )


class RouterRoute(Table):
    """``[routes.NAME]`` with ``type = "router"``: a trained predictor picks the model without calling any."""

    type: Literal["router"] = Field(description='`"router"`')
    predictor: str = Field(
        **_doc("the predictor file from `smartmix router train`", "(required)"),
    )
    theta: float | None = Field(
        None,
        **_doc(
            "pick the cheapest model whose predicted agreement with the reference is at least this", "—"
        ),
    )
    budget: float | None = Field(
        None, ge=0, **_doc("instead of `theta`: USD per request on average (needs `lambda`)", "—")
    )
    lambda_: float | None = Field(
        None,
        alias="lambda",
        **_doc("the cost weight tuned for `budget` (tune it on held-out prompts with `smartmix.router.tune_lambda`)", "—"),
    )

    @model_validator(mode="after")
    def _one_rule(self) -> RouterRoute:
        if self.theta is None and self.budget is None:
            raise ValueError("a router needs theta = 0.8, or budget and lambda")
        if self.theta is None and self.lambda_ is None:
            raise ValueError("a budget route needs the lambda tuned for it: tune it on held-out prompts with smartmix.router.tune_lambda")
        return self


def _route_type(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("type", "model")
    return getattr(value, "type", "model")


Route = Annotated[
    Annotated[ModelRoute, Tag("model")] | Annotated[CascadeRoute, Tag("cascade")] | Annotated[RouterRoute, Tag("router")],
    Discriminator(
        _route_type,
        custom_error_type="route_type",
        custom_error_message="type must be 'model', 'cascade' or 'router'",
    ),
]


class ServerTable(Table):
    """``[server]``: how ``smartmix serve`` admits clients and journals requests."""

    keys_env: str | None = Field(
        None,
        **_doc(
            "the **name** of the environment variable holding the client keys, comma-separated; a request "
            "without one of them gets 401",
            "—",
        ),
    )
    keys: list[str] = Field(
        default_factory=list,
        **_doc("client keys written in the file (prefer `keys_env`)", "none (no key needed)"),
    )
    journal: str | None = Field(
        None,
        **_doc(
            "SQLite journal of every served request: route's model, answer, cost (prompt and keys never); "
            "`--journal` overrides it",
            "none",
        ),
    )
    upstream_connections: int = Field(
        defaults.UPSTREAM_CONNECTIONS,
        ge=1,
        description=(
            "keep-alive connections to the upstream endpoints, all models together; one is needed per "
            "request in flight, the others wait for a free one"
        ),
    )

    max_body_bytes: int = Field(
        defaults.MAX_BODY_BYTES,
        ge=1,
        **_doc(
            "larger request bodies are refused with HTTP 413 before anything is forwarded or paid for",
            f"`{defaults.MAX_BODY_BYTES}` (4 MiB)",
        ),
    )

    @field_validator("keys_env")
    @classmethod
    def _keys_env(cls, value: str | None) -> str | None:
        return _env_name(value, "keys_env")


class JobFile(Table):
    """The whole job file."""

    reference: str | None = Field(None, description="the model whose answers define \"correct\"")
    models: dict[str, ModelTable] = Field(min_length=1)
    task: TaskTable = Field(default_factory=TaskTable)
    guarantee: GuaranteeTable = Field(default_factory=GuaranteeTable)
    run: RunTable = Field(default_factory=RunTable)
    routes: dict[str, Route] = Field(default_factory=dict)
    server: ServerTable = Field(default_factory=ServerTable)

    @model_validator(mode="after")
    def _names(self) -> JobFile:
        for name, model in self.models.items():
            model._name = name
        for name, route in self.routes.items():
            named = [route.model or name] if isinstance(route, ModelRoute) else getattr(route, "chain", [])
            unknown = [m for m in named if m not in self.models]
            if unknown:
                raise ValueError(
                    f"[routes.{name}] names model(s) {', '.join(unknown)}, not among the models: "
                    f"{', '.join(self.models)}"
                )
        return self

    def reference_name(self) -> str | None:
        """The reference from the top-level key, ``[guarantee] reference`` or ``reference = true``."""
        flagged = [name for name, m in self.models.items() if m.reference]
        return self.reference or self.guarantee.reference or (flagged[0] if flagged else None)
