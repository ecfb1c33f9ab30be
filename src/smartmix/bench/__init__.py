"""Benchmarks over recorded outputs, adversarial pools and the SMART paper's simulator.

``smartmix bench`` (:func:`smartmix.bench.command.bench`) runs every registered method, the BARGAIN peer and
the hindsight limits on the same seeded batches and writes ``<suite>.csv``, ``.md`` and ``.png`` reports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["bench", "run_bench"]


def __getattr__(name: str) -> Any:  # imported lazily: the package stays cheap to import
    if name in __all__:
        from smartmix.bench import command

        return getattr(command, name)
    raise AttributeError(f"module 'smartmix.bench' has no attribute {name!r}")
