"""smartmix: answer LLM batches at the lowest cost with a guarantee of agreement with a reference model.

The names below are imported on first use (PEP 562), so ``import smartmix`` — and with it the command
line's ``--help`` — does not load numpy, scipy or pandas.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Certificate": "smartmix.policies",
    "ExactComparator": "smartmix.tasks",
    "Guarantee": "smartmix.policies",
    "Item": "smartmix.tasks",
    "Job": "smartmix.api",
    "LabelComparator": "smartmix.tasks",
    "METHODS": "smartmix.policies",
    "ModelSpec": "smartmix.models",
    "Pool": "smartmix.models",
    "RunResult": "smartmix.result",
    "SmartmixError": "smartmix.errors",
    "Template": "smartmix.tasks",
    "arun": "smartmix.api",
    "load_items": "smartmix.tasks",
    "replay_job": "smartmix.api",
    "run": "smartmix.api",
    "simulated_job": "smartmix.api",
}

__all__ = [
    "Certificate",
    "ExactComparator",
    "Guarantee",
    "Item",
    "Job",
    "LabelComparator",
    "METHODS",
    "ModelSpec",
    "Pool",
    "RunResult",
    "SmartmixError",
    "Template",
    "arun",
    "load_items",
    "replay_job",
    "run",
    "simulated_job",
]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from smartmix.api import Job, arun, replay_job, run, simulated_job
    from smartmix.errors import SmartmixError
    from smartmix.models import ModelSpec, Pool
    from smartmix.policies import METHODS, Certificate, Guarantee
    from smartmix.result import RunResult
    from smartmix.tasks import ExactComparator, Item, LabelComparator, Template, load_items


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smartmix' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
