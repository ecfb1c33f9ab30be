"""``smartmix serve``: an OpenAI-compatible endpoint that routes each request to the cheapest model that will do.

Clients change only their base URL. The request's ``model`` names a *route* from the job file
(:mod:`smartmix.serve.routes`): a fixed model, a cascade, or the trained router. Models are called through
the same backends as batch runs (:func:`smartmix.config.build_backend`): per-model ``max_concurrency``,
``requests_per_minute``, ``timeout_s``, ``max_attempts`` and LiteLLM routing hold for served requests too.

Modules, one concept each: :mod:`~smartmix.serve.app` (the ASGI app and its handlers),
:mod:`~smartmix.serve.routes` (routes from the job file), :mod:`~smartmix.serve.limits` (what a request may
be), :mod:`~smartmix.serve.cascade` (the cascade's decision), :mod:`~smartmix.serve.billing` (what a
request paid, and its journal rows), :mod:`~smartmix.serve.responses` (bodies, errors, streams).
"""

from smartmix.serve.app import create_app

__all__ = ["create_app"]
