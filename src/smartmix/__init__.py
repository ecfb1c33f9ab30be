"""smartmix: answer LLM batches at the lowest cost with a guarantee of agreement with a reference model."""

from smartmix.api import Job, arun, replay_job, run, simulated_job
from smartmix.errors import SmartmixError
from smartmix.models import ModelSpec, Pool
from smartmix.policies import METHODS, Certificate, Guarantee
from smartmix.result import RunResult
from smartmix.tasks import ExactComparator, Item, LabelComparator, Template, load_items

__version__ = "0.1.0"

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
