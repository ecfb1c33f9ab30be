"""The Python API: ``smartmix.run(...)`` does what ``smartmix run`` does and returns a :class:`RunResult`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smartmix import defaults
from smartmix.backends.base import Backend, endpoint_of
from smartmix.comparators import make_comparator
from smartmix.engine import CallJournal, Engine, EngineOptions, ProgressCallback, run_sync
from smartmix.errors import ConfigError, DataError
from smartmix.models import Pool
from smartmix.modes import application_backend
from smartmix.policies import Guarantee
from smartmix.result import RunResult
from smartmix.tasks import Comparator, ExactComparator, Item, Template, load_items

ROUTED_METHODS = ("router", "cascade")  # the methods that use a trained predictor (--router)

MessageCallback = Callable[[str], None]


@dataclass
class Job:
    """Everything a run needs, resolved: items, pool, template, comparator, backend."""

    items: list[Item]
    pool: Pool
    template: Template
    comparator: Comparator
    backend: Backend
    source: str
    # builds the same backend again (in a Ray worker); None when the job cannot be rebuilt elsewhere
    backend_factory: Callable[[], Backend] | None = None


def is_recorded_outputs(path: str | Path) -> bool:
    """True when ``path`` is a JSONL file in the recorded-outputs layout (rows with an ``outputs`` map)."""
    path = Path(path)
    if not path.name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".jsonl.bz2")) or not path.exists():
        return False
    from smartmix.tasks import read_jsonl

    for _, row in read_jsonl(path):
        return isinstance(row.get("outputs"), dict)
    return False


def replay_job(
    path: str | Path,
    *,
    reference: str | None = None,
    models: Sequence[str] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    labels: Sequence[str] | None = None,
    compare: str | None = None,
    compare_options: Mapping[str, Any] | None = None,
) -> Job:
    """A job that replays recorded outputs: what each model really said and really cost.

    ``compare`` names the comparator (:func:`smartmix.comparators.make_comparator`; default ``label``
    with ``labels``, else ``exact``) and ``compare_options`` its options.
    """
    from smartmix.backends.replay import RecordedOutputs, ReplayBackend

    recorded = RecordedOutputs.load(path)
    pool = select_models(recorded.pool(reference=reference, prices=prices), models)
    unpriced = [s.name for s in pool.models if not s.priced and not _all_costs_recorded(recorded, s.name)]
    if unpriced:
        from smartmix.errors import PriceError

        names = ", ".join(unpriced)
        raise PriceError(
            f"{path} has no recorded cost for {names} and no price is known; give one with "
            f"--price {unpriced[0]}=IN/OUT (USD per million tokens)"
        )
    return Job(
        items=recorded.items,
        pool=pool,
        template=Template.recorded(),
        comparator=make_comparator(compare, labels, **dict(compare_options or {})),
        backend=ReplayBackend(recorded, pool),
        source=str(path),
        backend_factory=_Rebuild(_replay_backend, str(path), pool),
    )


def select_models(full: Pool, models: Sequence[str] | None) -> Pool:
    """``full`` cut down to ``models`` (the reference always stays); all of it when ``models`` is empty."""
    if not models:
        return full
    keep = [m for m in models if m != full.reference.name]
    for m in keep:
        full.spec(m)
    specs = [full.spec(m) for m in full.names if m in keep or m == full.reference.name]
    return Pool(specs, full.reference.name)


def _all_costs_recorded(recorded: Any, model: str) -> bool:
    return all(recorded.output(item.id, model).cost_usd is not None for item in recorded.items)


def simulated_job(profile: str, *, seed: int = 0, n_items: int | None = None) -> Job:
    """A job on the SMART paper's simulated experiment (profiles ``imdb``, ``sms-spam``, ``ag-news``)."""
    from smartmix.backends.simulated import PAPER_PROFILES, SimulatedBackend, simulated_items

    if profile not in PAPER_PROFILES:
        raise ConfigError(f"unknown simulated profile '{profile}'; choose one of: {', '.join(PAPER_PROFILES)}")
    spec = PAPER_PROFILES[profile]
    return Job(
        items=simulated_items(spec, n_items),
        pool=spec.pool(),
        template=Template(user="{text}"),
        comparator=ExactComparator(),
        backend=SimulatedBackend(spec, seed=seed, n_items=n_items),
        source=f"simulated:{profile}",
    )


def config_job(
    config: Any,
    data: str | Path | Any,
    *,
    reference: str | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    labels: Sequence[str] | None = None,
    compare: str | None = None,
    compare_options: Mapping[str, Any] | None = None,
) -> Job:
    """A job on real providers, described by a :class:`~smartmix.config.JobConfig` and an items file.

    ``compare``/``compare_options`` override the config's ``[task] compare`` and ``[task.compare_options]``.
    """
    from smartmix.config import build_backend, build_pool

    if data is None:
        raise ConfigError("no items: pass --data items.csv (or .jsonl, .parquet)")
    if not config.template:
        raise ConfigError("the config has no [task] template: add template = \"... {field} ...\"")
    items = load_items(data, id_field=config.id_field)
    template = Template(user=config.template, system=config.system)
    template.check(items)
    pool = build_pool(config, reference=reference, price_overrides=prices)
    return Job(
        items=items,
        pool=pool,
        template=template,
        comparator=make_comparator(
            compare or getattr(config, "compare", None),
            labels or config.labels,
            **dict(compare_options if compare_options is not None else (getattr(config, "compare_options", None) or {})),
        ),
        backend=build_backend(config),
        source=str(data),
        backend_factory=_Rebuild(build_backend, config),
    )


def _replay_backend(path: str, pool: Pool) -> Backend:
    from smartmix.backends.replay import ReplayBackend

    return ReplayBackend(_recorded(path), pool)


@functools.lru_cache(maxsize=4)
def _recorded(path: str) -> Any:
    """A recorded file, parsed once per process (a Ray worker runs many partitions of the same job)."""
    from smartmix.backends.replay import RecordedOutputs

    return RecordedOutputs.load(path)


class _Rebuild:
    """A picklable ``lambda: build(*args)`` (a Ray worker builds its own backend from the job's config)."""

    def __init__(self, build: Callable[..., Backend], *args: Any):
        self.build, self.args = build, args

    def __call__(self) -> Backend:
        return self.build(*self.args)


def run(
    data: str | Path | Any | None = None,
    *,
    config: str | Path | Any | None = None,
    run_dir: str | Path | None = None,
    target: float | None = None,
    confidence: float | None = None,
    method: str | None = None,
    reference: str | None = None,
    models: Sequence[str] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    labels: Sequence[str] | None = None,
    compare: str | None = None,
    compare_options: Mapping[str, Any] | None = None,
    simulated: str | None = None,
    job: Job | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    options: EngineOptions | None = None,
    max_cost: float | None = None,
    use_cache: bool = True,
    journal: CallJournal | None = None,
    run_id: str | None = None,
    progress: ProgressCallback | None = None,
    router: str | Path | None = None,
    on_event: MessageCallback | None = None,
    on_warning: MessageCallback | None = None,
    handle_signals: bool = True,
    scores: str | None = None,
    mode: str | None = None,
    batch_settings: Any = None,
    ray_settings: Any = None,
    calibration: str | Path | None = None,
    stream: bool | None = None,
    n_items: int | None = None,
    allowance: float | None = None,
) -> RunResult:
    """Answer every item at the lowest cost such that, with probability >= ``confidence``, at least
    ``target`` of the answers equal the reference model's.

    ``data`` is a recorded-outputs JSONL file (replayed), or with ``config`` (a job file, or a loaded
    :class:`~smartmix.config.JobConfig`) any items file for real providers; ``simulated="imdb"`` runs the
    SMART paper's simulated setting; a ready ``job`` (items, pool, template, comparator, backend) also works.

    With ``run_dir`` (the config's ``[run] dir`` by default when a config is given) the run is journaled
    and resumable exactly like ``smartmix run``: the same call again reads back what was paid, pays only
    for what is missing, and writes ``answers.jsonl`` and ``certificate.json`` into ``run_dir/<run id>/``.
    A second process on the same run is refused (:class:`~smartmix.errors.RunLocked`); Ctrl-C or SIGTERM
    (``handle_signals``, main thread only) stop issuing calls, let those in flight finish and raise
    :class:`~smartmix.errors.RunInterrupted`.

    ``target``, ``confidence``, ``method``, ``seed`` and ``max_cost`` default to the config's, else to
    0.9, 0.95, ``"mix"``, 0 and no cap. ``on_event`` receives one-line notices (run started or resumed),
    ``on_warning`` warnings about money likely wasted (also in ``RunResult.warnings``). ``mode`` sends the
    application phase through a bulk channel (``"batch"``: provider batch jobs, ``"ray"``), with its settings
    (default: the config's ``[run] mode``, else ``"sync"``). ``calibration``: recorded outputs of the same models
    on earlier items of the same task (replay layout); the plan shape is chosen from them, not from this batch.

    Replays and simulations are streamed whenever they can be (``stream=None``): read in chunks, a few bytes
    per item held, the same plan, answers, costs and certificate as the engine (docs/scale.md); ``items``
    of the result is then read back when iterated. ``stream=False`` runs them on the engine, ``stream=True``
    insists. ``n_items``: how many items a simulation has (default: the profile's). ``router``: a predictor
    file from ``smartmix router train``, for ``method="router"`` or ``"cascade"`` (cascade routing).
    ``allowance``: the never-worse allowance of the profiling methods (``exhaustive``, ``efficient``, ``mix``,
    ``cascade-profiled``, ``router``) as a share of the reference-only bill (default 0.025): profiling stops
    before candidate calls a fallback would waste could lift the bill above ``(1 + allowance)`` × reference-only.
    """
    return run_sync(
        arun(
            data, config=config, run_dir=run_dir, target=target, confidence=confidence, method=method,
            reference=reference, models=models, prices=prices, labels=labels, simulated=simulated, job=job,
            seed=seed, out=out, options=options, max_cost=max_cost, use_cache=use_cache, journal=journal,
            run_id=run_id, progress=progress, router=router, on_event=on_event, on_warning=on_warning,
            handle_signals=handle_signals, mode=mode, batch_settings=batch_settings, ray_settings=ray_settings,
            calibration=calibration, scores=scores, compare=compare, compare_options=compare_options,
            stream=stream, n_items=n_items, allowance=allowance,
        )
    )


async def arun(
    data: str | Path | Any | None = None,
    *,
    config: str | Path | Any | None = None,
    run_dir: str | Path | None = None,
    target: float | None = None,
    confidence: float | None = None,
    method: str | None = None,
    reference: str | None = None,
    models: Sequence[str] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    labels: Sequence[str] | None = None,
    simulated: str | None = None,
    job: Job | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    options: EngineOptions | None = None,
    max_cost: float | None = None,
    use_cache: bool = True,
    journal: CallJournal | None = None,
    run_id: str | None = None,
    progress: ProgressCallback | None = None,
    router: str | Path | None = None,
    on_event: MessageCallback | None = None,
    on_warning: MessageCallback | None = None,
    handle_signals: bool = False,
    scores: str | None = None,
    compare: str | None = None,
    compare_options: Mapping[str, Any] | None = None,
    mode: str | None = None,
    batch_settings: Any = None,
    ray_settings: Any = None,
    calibration: str | Path | None = None,
    stream: bool | None = None,
    n_items: int | None = None,
    allowance: float | None = None,
) -> RunResult:
    """The asynchronous form of :func:`run` (same arguments; ``handle_signals`` is off by default here,
    since an application that owns the event loop usually owns its signals too)."""
    from smartmix.runs import (
        RunDirectory,
        check_outputs,
        file_digest,
        open_run,
        status_for,
        write_run_outputs,
    )

    cfg = _as_config(config)
    target = _pick(target, cfg and cfg.target, defaults.TARGET)
    confidence = _pick(confidence, cfg and cfg.confidence, defaults.CONFIDENCE)
    method = _pick(method, cfg and cfg.method, defaults.METHOD)
    seed = _pick(seed, cfg and cfg.seed, defaults.SEED)
    mode = _pick(mode, getattr(cfg, "mode", None), "sync")
    calibration = _pick(calibration, getattr(cfg, "calibration", None))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, not {seed!r}")
    try:
        guarantee = Guarantee(target, confidence)
    except ValueError as exc:
        raise ConfigError(f"{exc}; e.g. --target 0.9 --confidence 0.95") from None
    if run_dir is None and cfg is not None and journal is None:
        run_dir = cfg.run_dir
    directory = RunDirectory(run_dir) if run_dir is not None and journal is None else None
    if method == "router" and router is None:
        raise ConfigError("--method router needs a trained predictor: pass --router router.npz (smartmix router train)")
    if router is not None and method not in ROUTED_METHODS:
        raise ConfigError(
            f"--router is used by --method router and --method cascade (cascade routing), not by {method}: "
            "drop --router or choose one of those methods"
        )
    _check_allowance(method, allowance)
    inputs = [data, getattr(cfg, "path", None), router, directory.journal_path if directory else None]
    check_outputs([out], inputs, answers=out)  # before any call: never overwrite what the run reads
    from smartmix.stream.run import check_streamable, why_not_streamed

    effective_cap = options.max_cost if options is not None and max_cost is None else _pick(max_cost, cfg and cfg.max_cost)
    why_not = why_not_streamed(data=data, simulated=simulated, config=cfg, job=job, journal=journal, scores=scores,
                               method=method, mode=mode, max_cost=effective_cap, router=router)
    if check_streamable(why_not, stream):
        result = _run_streamed(
            data, simulated=simulated, n_items=n_items, reference=reference, models=models, prices=prices,
            labels=labels, compare=compare, compare_options=compare_options, method=method, guarantee=guarantee,
            seed=seed, options=_with_allowance(options or EngineOptions(use_cache=use_cache), allowance),
            calibration=calibration, directory=directory, progress=progress, on_event=on_event, on_warning=on_warning,
        )
        if out is not None:
            result.write(out)
        return result
    if job is None:
        if cfg is not None:
            if models:
                cfg = only_models(cfg, list(models), reference)
            job = config_job(cfg, data, reference=reference, prices=prices, labels=labels, compare=compare,
                             compare_options=compare_options)
        else:
            job = resolve_job(
                data, reference=reference, models=models, prices=prices, labels=labels, simulated=simulated, seed=seed,
                compare=compare, compare_options=compare_options, n_items=n_items,
            )
    if scores:
        job = with_scores(job, scores)
    if options is None:
        options = EngineOptions(
            concurrency=_pick(cfg and cfg.concurrency, defaults.CONCURRENCY),
            max_cost=_pick(max_cost, cfg and cfg.max_cost, None),
            use_cache=use_cache,
            params={"max_tokens": cfg.max_tokens} if cfg is not None and cfg.max_tokens else {},
        )
    elif max_cost is not None:
        options = replace(options, max_cost=max_cost)
    options = _with_allowance(options, allowance)
    if calibration is not None:
        from smartmix.calibration import load_calibration

        options = replace(options, calibration=load_calibration(calibration, job.pool.names, job.comparator))

    async def execute(journal: Any, run_id: str | None) -> RunResult:
        return await _execute(
            job, method, guarantee, seed, options, journal=journal, run_id=run_id, progress=progress, router=router,
            on_warning=on_warning, handle_signals=handle_signals, on_event=on_event,
            channel_settings=(mode, batch_settings, ray_settings),
        )

    if directory is None:
        result = await execute(journal, run_id)
    else:
        settings = {
            "source": job.source,
            "data": file_digest(data) if isinstance(data, str | Path) and Path(data).is_file() else None,
            "config": cfg.to_public_dict() if cfg is not None else None,
            "models": job.pool.names,
            "endpoints": {name: endpoint_of(job.backend, name) for name in job.pool.names},
            "method": method, "target": target, "confidence": confidence, "seed": seed,
            "params": options.params, "labels": list(labels) if labels else None,
            "calibration": file_digest(calibration) if calibration is not None else None,
        }
        if compare or compare_options:  # agreement changes the plan: another comparator is another run
            settings["compare"] = [compare, dict(compare_options or {})]
        if options.method_options:  # so do the method's options (e.g. the allowance)
            settings["method_options"] = dict(sorted(options.method_options.items()))
        if scores:
            settings["scores"] = scores
        with open_run(directory, settings, seed) as opened:
            if on_event is not None:
                if opened.resumed:
                    on_event(f"Resuming run {opened.run_id}: calls already paid are read back from "
                             f"{directory.journal_path}.")
                else:
                    on_event(f"Run {opened.run_id} (journal: {directory.journal_path}).")
            result = await execute(opened.journal, opened.run_id)
            opened.status = status_for(None, len(result.failures))
            from smartmix.report import certificate_dict

            result.outputs = write_run_outputs(opened, result, certificate_dict)
    if out is not None:
        result.write(out)
    return result


def _check_allowance(method: str, allowance: float | None) -> None:
    """Refuse, before any call, an allowance the method would not read or that is not a share of the bill."""
    if allowance is None:
        return
    from smartmix.policies.smart import uses_allowance

    if isinstance(allowance, bool) or not isinstance(allowance, int | float) or not 0.0 <= allowance <= 1.0:
        raise ConfigError(
            f"--allowance is a share of the reference-only bill between 0 and 1 (e.g. 0.1 for 10%), not {allowance!r}"
        )
    if not uses_allowance(method):
        from smartmix.policies import METHODS

        profiling = ", ".join(m for m in METHODS if uses_allowance(m))
        raise ConfigError(
            f"--allowance sets how far the profiling methods ({profiling}) may risk going over the reference-only "
            f"bill; {method} does not profile that way: drop --allowance or choose one of those methods"
        )


def _with_allowance(options: EngineOptions, allowance: float | None) -> EngineOptions:
    if allowance is None:
        return options
    return replace(options, method_options={**options.method_options, "allowance": float(allowance)})


def _run_streamed(
    data: Any, *, simulated: str | None, n_items: int | None, reference: str | None, models: Sequence[str] | None,
    prices: Mapping[str, tuple[float, float]] | None, labels: Sequence[str] | None, compare: str | None,
    compare_options: Mapping[str, Any] | None, method: str, guarantee: Guarantee, seed: int, options: EngineOptions,
    calibration: str | Path | None, directory: Any, progress: ProgressCallback | None,
    on_event: MessageCallback | None, on_warning: MessageCallback | None,
) -> RunResult:
    """A replay or a simulation, streamed (:mod:`smartmix.stream`); with a run directory, registered there with
    the settings the engine would register, so the run id is the same either way."""
    from smartmix.runs import file_digest
    from smartmix.stream.run import in_run_directory, replay, simulate_streamed

    def settings(pool: Pool) -> dict[str, Any]:
        if simulated is not None:
            from smartmix.backends.simulated import PAPER_PROFILES

            n = n_items or PAPER_PROFILES[simulated].n_items
            source, digest, endpoint = f"simulated:{simulated}", None, f"simulated {simulated} seed={seed} n={n}"
        else:
            source, digest, endpoint = str(data), file_digest(data), f"replay {Path(data).resolve()}"
        out = {
            "source": source, "data": digest, "config": None, "models": pool.names,
            "endpoints": dict.fromkeys(pool.names, endpoint), "method": method, "target": guarantee.target,
            "confidence": guarantee.confidence, "seed": seed, "params": options.params,
            "labels": list(labels) if labels else None,
            "calibration": file_digest(calibration) if calibration is not None else None,
        }
        if compare or compare_options:
            out["compare"] = [compare, dict(compare_options or {})]
        if options.method_options:
            out["method_options"] = dict(sorted(options.method_options.items()))
        return out

    run = None if directory is None else in_run_directory(directory, settings, seed, on_event)
    if simulated is not None:
        return simulate_streamed(simulated, guarantee=guarantee, method=method, seed=seed, options=options,
                                 n_items=n_items, calibration=calibration, progress=progress, on_warning=on_warning,
                                 run=run)
    comparator = make_comparator(compare, labels, **dict(compare_options or {}))
    return replay(
        data, comparator=comparator, guarantee=guarantee, method=method, seed=seed, options=options,
        reference=reference, models=models, prices=prices, calibration=calibration, progress=progress,
        on_warning=on_warning, run=run,
    )


async def _execute(
    job: Job, method: str, guarantee: Guarantee, seed: int, options: EngineOptions, *, journal: Any,
    run_id: str | None, progress: ProgressCallback | None, router: str | Path | None,
    on_warning: MessageCallback | None, handle_signals: bool, on_event: MessageCallback | None,
    channel_settings: tuple[str, Any, Any] = ("sync", None, None),
) -> RunResult:
    """One attempt of the run: the engine over the job, under the signal handlers when asked."""
    from smartmix.errors import RunInterrupted
    from smartmix.interrupts import stop_on_signals

    # arun checked that the method takes a predictor; the cascade asks about whichever candidate it puts first
    predicted = None if router is None else predict_agreement(router, job, all_models=method == "cascade")
    mode, batch_settings, ray_settings = channel_settings
    channel = application_backend(
        mode, backend=job.backend, journal_path=getattr(journal, "path", None), run_id=run_id,
        backend_factory=job.backend_factory, batch_settings=batch_settings, ray_settings=ray_settings,
    )
    engine = Engine(
        job.backend, job.pool, job.template, job.comparator, options=options, journal=journal, run_id=run_id,
        progress=progress, application_backend=channel, on_warning=on_warning,
    )
    if hasattr(job.backend, "attach_journal"):  # virtual models journal each real call they make
        job.backend.attach_journal(journal, run_id, engine.options.use_cache)
    signals = stop_on_signals(engine.stop, say=on_warning) if handle_signals else contextlib.nullcontext()
    try:
        with signals:
            result = await engine.run(job.items, method, guarantee, seed=seed, predicted=predicted)
    except asyncio.CancelledError:
        if engine.stopping is None:
            raise
        raise RunInterrupted(
            f"{engine.stopping}, then aborted with calls still in flight (their answers are lost; a provider may "
            "bill them). Rerun the same command to continue: calls already journaled are not paid again."
        ) from None
    finally:
        await job.backend.aclose()
        if channel is not None:
            await channel.aclose()
    if channel is not None and hasattr(channel, "transport"):
        channel.transport.forget()  # every answer is in the run's journal now
    if getattr(job.backend, "virtual", None):  # some models are judged by a score they bring themselves
        from smartmix.backends.composite import describe_scores

        result.certificate.details["scores"] = describe_scores(job.pool, job.backend)
    return result


def _pick(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _as_config(config: str | Path | Any | None) -> Any:
    if config is None or not isinstance(config, str | Path):
        return config
    from smartmix.config import load_config

    return load_config(config)


def only_models(config: Any, names: list[str], reference: str | None) -> Any:
    """The config's pool cut down to ``names`` (the reference always stays in it)."""
    import dataclasses

    from smartmix.errors import UnknownModelError

    unknown = [n for n in names if n not in config.models]
    if unknown:
        raise UnknownModelError(
            f"--models names {', '.join(unknown)}, not in the config {config.path or ''}; "
            f"its models are: {', '.join(config.models)}"
        )
    keep = set(names) | {reference or config.reference}
    return dataclasses.replace(config, models={n: m for n, m in config.models.items() if n in keep})



def with_scores(job: Job, kind: str, **options: Any) -> Job:
    """The job with one virtual model per candidate that scores its answers (``kind``: consistency,
    self-consistency or verbal); replays support only consistency (recorded outputs hold one sample)."""
    from smartmix.backends.composite import SCORE_KINDS, CompositeBackend, virtual_models, with_virtual_models
    from smartmix.backends.replay import ReplayBackend

    if kind not in SCORE_KINDS:
        raise ConfigError(f"unknown --scores '{kind}'; choose one of: {', '.join(SCORE_KINDS)}")
    if kind != "consistency" and isinstance(job.backend, ReplayBackend):
        raise ConfigError(
            f"--scores {kind} needs live models (recorded outputs hold one answer per model); "
            "replays can use --scores consistency"
        )
    virtual = virtual_models(job.pool, kind, **options)
    pool = with_virtual_models(job.pool, virtual)
    return replace(job, pool=pool, backend=CompositeBackend(job.backend, virtual, job.comparator, pool))


def predict_agreement(path: str | Path, job: Job, *, all_models: bool = False):
    """Predicted agreement with the reference for every item and pool model (NaN where not predicted).

    By default only the models the router may pick (the predictor's routable ones); ``all_models``: every
    model it was trained on (cascade routing asks about whichever candidate heads the cascade)."""
    import numpy as np

    from smartmix.router.predictor import AgreementPredictor

    predictor = AgreementPredictor.load(path)
    prompts = [
        next((m.content for m in reversed(job.template.render(item)) if m.role == "user"), "") for item in job.items
    ]
    predicted = predictor.predict(prompts, all_models=all_models)
    names = job.pool.names
    out = np.full((len(job.items), len(names)), np.nan)
    for j, name in enumerate(names[:-1]):
        if name in predicted:
            out[:, j] = predicted[name]
    return out


def resolve_job(
    data: str | Path | Any | None,
    *,
    reference: str | None = None,
    models: Sequence[str] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    labels: Sequence[str] | None = None,
    simulated: str | None = None,
    seed: int = 0,
    compare: str | None = None,
    compare_options: Mapping[str, Any] | None = None,
    n_items: int | None = None,
) -> Job:
    if simulated is not None:
        return simulated_job(simulated, seed=seed, n_items=n_items)
    if data is None:
        raise ConfigError("no data: pass a recorded-outputs file (--data FILE.jsonl) or --simulated imdb")
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.exists():
            raise DataError(f"data file '{path}' does not exist")
        if is_recorded_outputs(path):
            return replay_job(
                path, reference=reference, models=models, prices=prices, labels=labels,
                compare=compare, compare_options=compare_options,
            )
    raise ConfigError(
        "plain item files need real models: describe them in a config file (smartmix run --config job.toml "
        "--data items.csv), or pass a recorded-outputs file to replay"
    )


__all__ = [
    "Job", "arun", "config_job", "make_comparator", "with_scores", "replay_job", "resolve_job", "run", "select_models",
    "simulated_job", "load_items",
]
