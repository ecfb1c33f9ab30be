"""What a run hands back: one answer per item, the ledger, the certificate."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartmix.errors import ConfigError
from smartmix.policies import Certificate


@dataclass
class ItemResult:
    id: str
    answer: str | None
    model: str | None  # the model whose answer is final (None when the item failed)
    cost: float  # everything spent on this item, profiling calls included
    phase: str  # "profiling" or "application"
    error: str | None = None


@dataclass
class Ledger:
    """Money spent, per model and phase."""

    entries: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, model: str, phase: str, cost: float) -> None:
        self.entries[(model, phase)] += cost
        self.calls[(model, phase)] += 1

    @property
    def total(self) -> float:
        return float(sum(self.entries.values()))

    def by_phase(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for (_, phase), cost in self.entries.items():
            out[phase] += cost
        return dict(out)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"model": m, "phase": p, "calls": self.calls[(m, p)], "cost_usd": c}
            for (m, p), c in sorted(self.entries.items())
        ]


@dataclass
class RunResult:
    items: list[ItemResult]
    certificate: Certificate
    ledger: Ledger
    reference_cost: float  # what the reference alone would have cost (measured where it ran, else estimated)
    reference_cost_measured: bool
    method: str
    seed: int
    run_id: str | None = None
    warnings: list[str] = field(default_factory=list)  # money likely wasted: labels never seen, ...
    outputs: Path | None = None  # the run's folder in its run directory (answers.jsonl, certificate.json)

    @property
    def total_cost(self) -> float:
        return self.ledger.total

    @property
    def savings(self) -> float:
        return self.reference_cost / self.total_cost if self.total_cost > 0 else float("inf")

    @property
    def failures(self) -> list[ItemResult]:
        return [r for r in self.items if r.error is not None]

    @property
    def answers(self) -> list[str | None]:
        return [r.answer for r in self.items]

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(
            {
                "id": [r.id for r in self.items],
                "answer": [r.answer for r in self.items],
                "model": [r.model for r in self.items],
                "cost": [r.cost for r in self.items],
                "phase": [r.phase for r in self.items],
                "error": [r.error for r in self.items],
            }
        )

    def write(self, path: str | Path) -> Path:
        """Write the answers as JSONL, CSV or Parquet, chosen by the file extension."""
        from smartmix.runs import atomic_path

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".ndjson", ".csv", ".parquet", ".pq"):
            raise ConfigError(f"cannot write '{path}': use a .jsonl, .csv or .parquet file name")
        df = self.to_pandas()
        with atomic_path(path) as tmp:  # written whole, then renamed over the target: never half a file
            if suffix in (".jsonl", ".ndjson"):
                df.to_json(tmp, orient="records", lines=True, force_ascii=False)
            elif suffix == ".csv":
                df.to_csv(tmp, index=False)
            else:
                df.to_parquet(tmp, index=False)
        return path
