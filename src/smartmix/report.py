"""Human-readable reports: the certificate, the bill, the answers' summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from smartmix.result import RunResult


def certificate_dict(result: RunResult) -> dict[str, Any]:
    """The certificate and the bill as plain data (what `--report FILE.json` writes)."""
    cert = result.certificate
    return {
        "method": result.method,
        "statement": cert.statement(),
        "valid": cert.valid,
        "target": cert.target,
        "confidence": cert.confidence,
        "items": cert.n_items,
        "profiled": cert.profiled,
        "bounds": cert.bounds,
        "shares": cert.shares,
        "margin": cert.margin,
        "total_cost_usd": result.total_cost,
        "reference_cost_usd": result.reference_cost,
        "reference_cost_measured": result.reference_cost_measured,
        "savings": result.savings,
        "failed_items": len(result.failures),
        "ledger": result.ledger.rows(),
        "seed": result.seed,
        "details": cert.details,
    }


def _agreement_lines(details: dict[str, Any]) -> list[str]:
    """What agreement meant (the comparator), unreadable answers, and the score each model was judged by."""
    lines = []
    if details.get("comparator") not in (None, "exact"):
        lines.append(f"Agreement: the '{details['comparator']}' comparator.")
    unparseable = {m: k for m, k in (details.get("unparseable") or {}).items() if k}
    if unparseable:
        shown = ", ".join(f"{m}: {k:,}" for m, k in unparseable.items())
        lines.append(f"Answers the comparator could not read (counted as disagreements): {shown}.")
    scores = details.get("scores") or {}
    if any(not str(s).startswith("own confidence") for s in scores.values()):
        by_kind: dict[str, list[str]] = {}
        for model, how in scores.items():
            by_kind.setdefault(str(how).split(" (")[0], []).append(model)
        lines.append("Scores: " + "; ".join(f"{kind}: {', '.join(ms)}" for kind, ms in by_kind.items()) + ".")
    return lines


def render(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    cert = result.certificate
    lines = [cert.statement()]
    if cert.bounds:
        shown = ", ".join(f"{m} >= {b:.3f}" for m, b in cert.bounds.items())
        lines.append(f"Certified agreement on the items not profiled: {shown}.")
    if cert.margin:
        lines.append(f"Random-split allowance: {cert.margin:.4f} of the remaining items.")
    lines.append(f"Profiled {cert.profiled:,} of {cert.n_items:,} items (answered by the reference).")
    stage = cert.details.get("second_stage")
    if stage:
        chain = cert.details.get("chain") or []
        lines.append(
            f"Second stage: the {stage['items']:,} items {chain[0] if chain else 'the head'} scored at or below "
            f"{stage['below_head_score']:.3f} went to {stage['model']}; thresholds kept: "
            + ", ".join(f"{m} above {t:.3f}" for m, t in stage["thresholds"].items())
            + "."
        )
    screen = cert.details.get("screen")
    if screen:
        kept = ", ".join(screen["kept"]) or "none"
        lines.append(
            f"Screen: the first {screen['items']:,} items (outside the bounds) chose which of "
            f"{', '.join(screen['screened'])} to certify: {kept}; δ is split over those alone."
        )
    routed = cert.details.get("routed_to_reference")
    if routed:
        lines.append(
            f"Cascade routing: {routed['items']:,} items whose predicted agreement was below "
            f"{routed['below_predicted_agreement']:.3f} went straight to the reference (no cheap call paid)."
        )
    if cert.details.get("fallback_reason"):
        lines.append(f"[yellow]Answered with the reference: {cert.details['fallback_reason']}.[/]")
    lines.extend(_agreement_lines(cert.details))
    if result.failures:
        lines.append(
            f"[bold red]{len(result.failures)} item(s) failed[/] and have no answer; they count as not agreeing. "
            "Rerun the same command to retry them (paid calls are not paid again when a journal is used)."
        )
    style = "green" if cert.valid else "yellow"
    console.print(Panel("\n".join(lines), title=f"Certificate — method '{result.method}'", border_style=style))

    shares = Table(title="Who answered", show_edge=False)
    shares.add_column("model")
    shares.add_column("share of items", justify="right")
    for model, share in sorted(cert.shares.items(), key=lambda kv: -kv[1]):
        shares.add_row(model, f"{share:.1%}")
    console.print(shares)

    bill = Table(title="Bill", show_edge=False)
    bill.add_column("model")
    bill.add_column("phase")
    bill.add_column("calls", justify="right")
    bill.add_column("USD", justify="right")
    for row in result.ledger.rows():
        bill.add_row(row["model"], row["phase"], f"{row['calls']:,}", f"{row['cost_usd']:.4f}")
    bill.add_row("[bold]total[/]", "", "", f"[bold]{result.total_cost:.4f}[/]")
    console.print(bill)
    how = "measured" if result.reference_cost_measured else "estimated from profiling"
    console.print(
        f"Reference-only cost ({how}): ${result.reference_cost:.4f}   "
        f"[bold]savings: {result.savings:.2f}x[/]"
    )
