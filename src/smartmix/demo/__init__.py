"""The offline demo on real local LLMs: two small GGUF models served by llama.cpp, and a labelled data set.

* :mod:`smartmix.demo.local_models`: ``ensure_models()`` finds or installs SmolLM2-135M (cheap) and
  Gemma 3 270M (reference) into ``$XDG_CACHE_HOME/smartmix/models``.
* :mod:`smartmix.demo.llama_server`: ``LlamaServer``, an OpenAI-compatible llama.cpp server in a child process.
* :mod:`smartmix.demo.reviews`: ``load_reviews()``, balanced Rotten Tomatoes snippets labelled positive/negative.
* :mod:`smartmix.demo.prompt`: the few-shot completion prompt and the two labels.

Names are imported lazily, so ``python -m smartmix.demo.llama_server`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ensure_models": "local_models",
    "LocalModels": "local_models",
    "ModelNotAvailableError": "local_models",
    "LlamaServer": "llama_server",
    "first_token_top_logprobs": "llama_server",
    "load_reviews": "reviews",
    "PROMPT_TEMPLATE": "prompt",
    "LABELS": "prompt",
    "build_prompt": "prompt",
    "parse_label": "prompt",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smartmix.demo' has no attribute {name!r}")
    return getattr(importlib.import_module(f"smartmix.demo.{module}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
