"""The command line: ``smartmix run``, ``smartmix bench`` and friends."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from smartmix.errors import SmartmixError

app = typer.Typer(
    name="smartmix",
    help=(
        "Answer a batch of LLM tasks at the lowest cost while guaranteeing, with probability >= CONFIDENCE, "
        "that at least TARGET of the answers equal what the reference model would have said.\n\n"
        "Example (replaying recorded outputs, no API key needed):\n\n"
        "  smartmix run --data ../shared/data/mmlu-qwen-oai/test.jsonl --reference gpt-4o "
        "--target 0.9 --confidence 0.95 --method mix --out answers.jsonl"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
stdout = Console()


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _prices(values: list[str] | None) -> dict[str, tuple[float, float]]:
    from smartmix.models import parse_price

    out = {}
    for value in values or []:
        name, p_in, p_out = parse_price(value)
        out[name] = (p_in, p_out)
    return out


@app.command()
def run(
    data: Annotated[Path | None, typer.Option(help="Items: a recorded-outputs JSONL file (replayed offline).")] = None,
    simulated: Annotated[
        str | None, typer.Option(help="Run the SMART paper's simulated experiment instead: imdb, sms-spam or ag-news.")
    ] = None,
    reference: Annotated[str | None, typer.Option(help="The reference model (default: the priciest).")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated models to use (default: all).")] = None,
    price: Annotated[
        list[str] | None,
        typer.Option(help="Price override MODEL=IN/OUT in USD per million tokens; repeatable."),
    ] = None,
    labels: Annotated[str | None, typer.Option(help="Comma-separated answer labels for classification tasks.")] = None,
    target: Annotated[float, typer.Option(help="Fraction of answers that must equal the reference's.")] = 0.9,
    confidence: Annotated[float, typer.Option(help="Probability with which the target must hold.")] = 0.95,
    method: Annotated[
        str, typer.Option(help="reference | exhaustive | efficient | mix | paper (paper: published SMART, no guarantee).")
    ] = "mix",
    seed: Annotated[int, typer.Option(help="Seed: the same seed reproduces the same run.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write answers here (.jsonl, .csv or .parquet).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the certificate and bill as JSON here.")] = None,
    concurrency: Annotated[int, typer.Option(help="Calls in flight at once.")] = 16,
    batch_size: Annotated[int, typer.Option(help="Items profiled per batch.")] = 10,
    max_cost: Annotated[float | None, typer.Option(help="Hard cap in USD: stop before a call that could cross it.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Answer every item with the cheapest plan that keeps the guarantee; print the certificate and the bill."""
    from smartmix.api import resolve_job
    from smartmix.api import run as run_api
    from smartmix.engine import EngineOptions
    from smartmix.progress import ProgressDisplay
    from smartmix.report import certificate_dict, render

    job = resolve_job(
        data, reference=reference, models=_split(models), prices=_prices(price), labels=_split(labels),
        simulated=simulated, seed=seed,
    )
    options = EngineOptions(concurrency=concurrency, batch_size=batch_size, max_cost=max_cost)
    with ProgressDisplay(len(job.items), enabled=not quiet) as progress:
        result = run_api(
            job=job, target=target, confidence=confidence, method=method, seed=seed, out=out, options=options,
            progress=progress.update,
        )
    render(result, stdout)
    if out is not None:
        stdout.print(f"Answers written to {out} ({len(result.items):,} rows).")
    if report is not None:
        report.write_text(json.dumps(certificate_dict(result), indent=2, default=str))
        stdout.print(f"Certificate written to {report}.")
    if result.failures:
        raise typer.Exit(3)


@app.command()
def methods() -> None:
    """List the methods and whether each one carries a guarantee."""
    from smartmix.policies import Policy

    for name, cls in sorted(Policy.registry.items()):
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        flag = "guaranteed" if cls.valid else "NO guarantee"
        stdout.print(f"[bold]{name:11}[/] {flag:13} {doc}")


def _register_optional_commands() -> None:
    try:
        from smartmix.bench.command import bench
    except ImportError:  # pragma: no cover - the bench package is part of the distribution
        return
    app.command("bench")(bench)


_register_optional_commands()


def main() -> None:
    try:
        app(standalone_mode=False)
    except SmartmixError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("interrupted: paid calls are kept in the journal when one is used; rerun to continue")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
