"""Provider batch APIs as a source of answers for the application phase.

A plan's application phase is a list of independent calls; providers sell the same calls at about half
price when they may answer them within a day. :class:`~smartmix.batch.runner.BatchRunner` turns a list of
requests into provider batch jobs and back into completions, journaling every batch and every
``custom_id`` so that a process killed while a batch is pending resumes by polling it, never by paying for
it again.
"""

from smartmix.batch.runner import BatchOutcome, BatchRunner, BatchSettings
from smartmix.batch.store import BatchStore

__all__ = ["BatchOutcome", "BatchRunner", "BatchSettings", "BatchStore"]
