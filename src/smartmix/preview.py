"""Cost preview: what a run can cost, estimated before any call."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from smartmix.api import Job
from smartmix.models import estimate_tokens


@dataclass
class Preview:
    items: int
    per_model: dict[str, float]  # estimated cost of running each model on every item
    reference: str
    method: str

    @property
    def reference_only(self) -> float:
        return self.per_model[self.reference]

    @property
    def floor(self) -> float:
        """Cheapest conceivable: the cheapest model answers everything, nothing is profiled."""
        return min(self.per_model.values())

    @property
    def ceiling(self) -> float:
        """Worst case for the method: every model it may call, on every item."""
        if self.method == "reference":
            return self.reference_only
        if self.method == "margin":
            return self.floor + self.reference_only
        return sum(self.per_model.values())


def estimate(job: Job, method: str, max_tokens: int) -> Preview:
    per_model = {}
    for spec in job.pool.models:
        total = 0.0
        for item in job.items:
            prompt = "\n".join(m.content for m in job.template.render(item))
            total += spec.cost(estimate_tokens(prompt), max_tokens)
        per_model[spec.name] = total
    return Preview(len(job.items), per_model, job.pool.reference.name, method)


def render_preview(preview: Preview, console: Console) -> None:
    table = Table(title=f"Cost preview for {preview.items:,} items (estimated, before any call)")
    table.add_column("model")
    table.add_column("all items, USD", justify="right")
    for name, cost in sorted(preview.per_model.items(), key=lambda kv: kv[1]):
        marker = " (reference)" if name == preview.reference else ""
        table.add_row(name + marker, f"{cost:.4f}")
    console.print(table)
    console.print(f"Reference only: ~${preview.reference_only:.4f}")
    console.print(
        f"Method '{preview.method}': between ~${preview.floor:.4f} (the cheapest model does everything) and "
        f"~${preview.ceiling:.4f} (worst case: every model it may call, on every item). "
        "Use --max-cost to cap the spend."
    )
