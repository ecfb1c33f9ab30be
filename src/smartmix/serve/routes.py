"""Routes: what a request's ``model`` names, from the job file's models and ``[routes.NAME]`` tables.

- ``type = "model"``: a fixed model (every model of the pool is also a route of its own name);
- ``type = "cascade"``: the chain's models are asked in order with first-token logprobs; the first answer
  whose confidence score is above ``threshold`` is returned, else the reference answers;
- ``type = "router"``: a trained agreement predictor (``smartmix router train``) picks, without calling
  anything, the cheapest model whose predicted agreement with the reference is at least ``theta``, or the
  best predicted agreement within ``budget`` USD per request on average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from smartmix.config import JobConfig
from smartmix.errors import ConfigError
from smartmix.models import Pool

__all__ = ["Route", "parse_routes", "pick_by_router", "warm_up"]


@dataclass
class Route:
    name: str
    kind: str  # model | cascade | router
    model: str | None = None
    chain: list[str] = field(default_factory=list)
    threshold: float = 0.9
    predictor: Any = None
    theta: float | None = None
    lam: float | None = None
    offload: bool = False  # run the predictor in a worker thread (a neural embedder), not on the event loop


def parse_routes(config: JobConfig, pool: Pool) -> dict[str, Route]:
    routes = {name: Route(name, "model", model=name) for name in config.models}
    for name, raw in config.extra.get("routes", {}).items():
        kind = raw.get("type", "model")
        if kind == "model":
            model = raw.get("model", name)
            pool.spec(model)
            routes[name] = Route(name, "model", model=model)
        elif kind == "cascade":
            chain = list(raw.get("chain") or [])
            for m in chain:
                pool.spec(m)
            if not chain:
                raise ConfigError(f"[routes.{name}]: a cascade needs chain = [\"cheap-model\", ...]")
            threshold = raw.get("threshold", 0.9)
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or math.isnan(threshold):
                raise ConfigError(f"[routes.{name}]: threshold must be a number, not {threshold!r}")
            routes[name] = Route(name, "cascade", chain=chain, threshold=float(threshold))
        elif kind == "router":
            routes[name] = _router_route(name, raw, pool)
        else:
            raise ConfigError(f"[routes.{name}]: type must be 'model', 'cascade' or 'router', not '{kind}'")
    return routes


def _router_route(name: str, raw: dict, pool: Pool) -> Route:
    from smartmix.router.predictor import AgreementPredictor

    path = raw.get("predictor")
    if not path:
        raise ConfigError(f"[routes.{name}]: a router needs predictor = \"router.npz\" (smartmix router train)")
    predictor = AgreementPredictor.load(path)
    route = Route(name, "router", predictor=predictor)
    if "theta" in raw:
        route.theta = float(raw["theta"])
    elif "budget" in raw:
        route.lam = float(raw.get("lambda", math.nan))
        if math.isnan(route.lam):
            raise ConfigError(
                f"[routes.{name}]: a budget route needs the lambda tuned for it (lambda = ...)"
            )
    else:
        raise ConfigError(f"[routes.{name}]: a router needs theta = 0.8 or budget + lambda")
    for m in predictor.models:
        pool.spec(m)
    return route


def pick_by_router(route: Route, pool: Pool, prompt: str) -> str:
    """The model the router picks for ``prompt``."""
    from smartmix.models import estimate_tokens
    from smartmix.router.selector import select_budget, select_threshold

    pred = route.predictor.predict([prompt])
    n_in = estimate_tokens(prompt)
    costs = {m: pool.spec(m).cost(n_in, 16) for m in pred}
    if route.theta is not None:
        return str(select_threshold(pred, costs, route.theta, reference=pool.reference.name)[0])
    return str(select_budget(pred, costs, lam=route.lam, reference=pool.reference.name)[0])


def warm_up(route: Route, pool: Pool) -> None:
    """Load the router's embedder and its imports now, at startup, not on the first request."""
    from smartmix.router.embedding import HashingEmbedder

    route.offload = not isinstance(route.predictor.embedder, HashingEmbedder)
    pick_by_router(route, pool, "warm-up")
