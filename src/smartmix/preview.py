"""Cost preview: what a run can cost, estimated before any call."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    min_items: dict[str, int | None] = field(default_factory=dict)  # per method: below this, reference only

    @property
    def reference_only(self) -> float:
        return self.per_model[self.reference]

    @property
    def floor(self) -> float:
        """Cheapest conceivable: the cheapest model answers everything, nothing is profiled."""
        return min(self.per_model.values())

    @property
    def ceiling(self) -> float:
        """Most the method is expected to cost (see :meth:`ceiling_reason`)."""
        if self.method == "reference":
            return self.reference_only
        if self.method == "margin":
            return self.floor + self.reference_only
        if self.method in NEVER_WORSE:
            from smartmix.policies.smart import DEFAULT_ALLOWANCE

            return (1.0 + DEFAULT_ALLOWANCE) * self.reference_only
        if self.method == "cascade":
            from smartmix.policies.scorefirst import ScoreFirstCascade
            from smartmix.policies.smart import DEFAULT_ALLOWANCE

            candidates = [cost for name, cost in self.per_model.items() if name != self.reference]
            first_pass = max(candidates, default=0.0)
            one_pass = (1.0 + ScoreFirstCascade.pilot_overhead) * self.reference_only + first_pass
            return max(one_pass, (1.0 + DEFAULT_ALLOWANCE) * self.reference_only)  # or cascade-profiled's cap
        return sum(self.per_model.values())

    def ceiling_reason(self) -> str:
        if self.method == "reference":
            return "the reference answers everything"
        if self.method == "margin":
            return "the cheap model on every item, the reference on every escalated one"
        if self.method in NEVER_WORSE:
            from smartmix.policies.smart import DEFAULT_ALLOWANCE

            return (
                f"reference-only plus the {DEFAULT_ALLOWANCE:.1%} profiling allowance: profiling stops, and the "
                "reference answers the rest, before candidate calls could lift the bill above it, judged on "
                "each model's cost per call so far"
            )
        if self.method == "cascade":
            return (
                "reference-only, its pilot, and one cheap model's pass over every item if the certificate then "
                "kept nothing (a second stage's pass is taken only if both passes cost no more than the priciest "
                "candidate's); that pass is paid only when the pilot projects a saving larger than its fee "
                "(when it does not, on batches of 10,000 items or more, cascade-profiled may take over within "
                "its profiling allowance)"
            )
        return "every model it may call, on every item"


GUARANTEED_PROFILERS = ("exhaustive", "efficient", "mix")
NEVER_WORSE = (*GUARANTEED_PROFILERS, "cascade-profiled")  # methods bound by the profiling allowance


def break_even_items(
    prices: dict[str, float], reference: str, method: str, target: float = 0.9, confidence: float = 0.95
) -> int | None:
    """Smallest batch on which ``method`` would profile at all: its pricing pilot fits the profiling allowance
    and the cheapest candidate, even if it always agreed, could be certified within that allowance. Below it
    the method answers with the reference. None: not at any size up to ten million items."""
    from smartmix.policies import BatchSpec, Guarantee, make_policy

    candidates = sorted((p, m) for m, p in prices.items() if m != reference)
    if not candidates or prices[reference] <= 0:
        return None
    models = tuple(m for _, m in candidates) + (reference,)
    cheapest, c_ref = candidates[0][0], prices[reference]
    total = sum(p for p, _ in candidates)
    n = 16
    while n <= 10_000_000:
        policy = make_policy(method, BatchSpec(n, models, Guarantee(target, confidence)))
        if policy.fallback_reason is None:
            perfect = policy.perfect_sample_size()
            room = policy.profiling_allowance * n * c_ref - policy.cert_start * total
            if perfect is not None and cheapest < c_ref and perfect * cheapest <= room:
                return n
        n = int(n * 1.25) + 1
    return None


CASCADE_BREAK_EVEN_CAP = 1_000_000


def cascade_break_even_items(
    prices: dict[str, float], reference: str, target: float = 0.9, confidence: float = 0.95
) -> int | None:
    """Smallest batch on which ``cascade`` would pay for a first pass at all: its own pilot decision, fed
    candidates that agree on every pilot item with full confidence. Below it the cascade answers with the
    reference after its pilot. None: not at any size up to :data:`CASCADE_BREAK_EVEN_CAP` items."""
    import numpy as np

    from smartmix.policies import BatchSpec, Guarantee
    from smartmix.policies.scorefirst import ScoreFirstCascade

    candidates = sorted((p, m) for m, p in prices.items() if m != reference)
    if not candidates or prices[reference] <= 0:
        return None
    models = tuple(m for _, m in candidates) + (reference,)
    n = 16
    while n <= CASCADE_BREAK_EVEN_CAP:
        policy = ScoreFirstCascade(BatchSpec(n, models, Guarantee(target, confidence)))
        while policy.phase in ("probe", "pilot", "pilot_rest") and policy.delegate is None:
            batch = policy.next_batch()
            if batch is None:
                break
            shape = (len(batch.items), len(batch.models))
            cost = np.tile([prices[models[m]] for m in batch.models], (shape[0], 1))
            score = np.where(np.asarray(batch.models) == len(models) - 1, np.nan, 1.0) * np.ones(shape)
            policy.observe(batch, np.ones(shape, dtype=bool), cost, score)
        if policy.phase == "first_pass" or policy.delegate is not None:
            return n
        n = int(n * 1.25) + 1
    return None


def estimate(job: Job, method: str, max_tokens: int, target: float = 0.9, confidence: float = 0.95) -> Preview:
    per_model = {}
    for spec in job.pool.models:
        total = 0.0
        for item in job.items:
            prompt = "\n".join(m.content for m in job.template.render(item))
            total += spec.cost(estimate_tokens(prompt), max_tokens)
        per_model[spec.name] = total
    n = max(1, len(job.items))
    prices = {name: cost / n for name, cost in per_model.items()}
    reference = job.pool.reference.name
    min_items = {m: break_even_items(prices, reference, m, target, confidence) for m in GUARANTEED_PROFILERS}
    min_items["cascade"] = cascade_break_even_items(prices, reference, target, confidence)
    return Preview(len(job.items), per_model, reference, method, min_items)


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
        f"~${preview.ceiling:.4f} ({preview.ceiling_reason()}). "
        "Use --max-cost for a hard cap on the spend."
    )
    for name, size in preview.min_items.items():
        if name == "cascade":
            below = f"below ~{size:,} items" if size is not None else f"at any batch size up to {CASCADE_BREAK_EVEN_CAP:,}"
            console.print(
                f"'cascade' answers with the reference after its pilot {below}: a pass over every item would not "
                "pay even if the cheap model always agreed."
            )
            continue
        below = f"below ~{size:,} items" if size is not None else "at any batch size"
        console.print(f"'{name}' answers with the reference (no profiling) {below}: profiling would not pay.")
