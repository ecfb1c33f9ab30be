"""One execution core: the driver, the chain rule and the answer sources it runs on.

- :mod:`smartmix.core.chain`: the chain rule (``keeps``: score strictly above threshold, NaN never keeps);
- :mod:`smartmix.core.driver`: profile rounds and plan application over any answer source;
- :mod:`smartmix.core.source`: the answer-source protocol and the arrays sources return;
- :mod:`smartmix.core.offline`: answers from known arrays (validity runs, benchmarks) and ``simulate``;
- the live source, models behind a journal, is :class:`smartmix.engine.Engine`.

Importing this package is cheap (the chain rule only); the driver and the sources load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from smartmix.core.chain import keeps

_LAZY = {
    "AnswerSource": "smartmix.core.source",
    "Answers": "smartmix.core.source",
    "Observation": "smartmix.core.source",
    "Execution": "smartmix.core.driver",
    "execute": "smartmix.core.driver",
    "run_inline": "smartmix.core.driver",
    "OfflineSource": "smartmix.core.offline",
    "simulate": "smartmix.core.offline",
    "TrialOutcome": "smartmix.core.offline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smartmix.core' has no attribute {name!r}")


__all__ = ["keeps", *_LAZY]
