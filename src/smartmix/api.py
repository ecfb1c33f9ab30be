"""The Python API: ``smartmix.run(...)`` does what ``smartmix run`` does and returns a :class:`RunResult`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartmix.backends.base import Backend
from smartmix.comparators import make_comparator
from smartmix.engine import CallJournal, Engine, EngineOptions, ProgressCallback, run_sync
from smartmix.errors import ConfigError, DataError
from smartmix.models import Pool
from smartmix.modes import application_backend
from smartmix.policies import Guarantee
from smartmix.result import RunResult
from smartmix.tasks import Comparator, ExactComparator, Item, Template, load_items


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
    full = recorded.pool(reference=reference, prices=prices)
    if models:
        keep = [m for m in models if m != full.reference.name]
        for m in keep:
            full.spec(m)
        specs = [full.spec(m) for m in full.names if m in keep or m == full.reference.name]
        pool = Pool(specs, full.reference.name)
    else:
        pool = full
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


def run(data: str | Path | Any | None = None, **options: Any) -> RunResult:
    """Answer every item at the lowest cost such that, with probability >= ``confidence``, at least
    ``target`` of the answers equal the reference model's.

    ``data`` is a recorded-outputs JSONL file (replayed), or use ``simulated="imdb"`` for the SMART paper's
    experiment, or pass a ready ``job`` (items, pool, template, comparator, backend) for real providers.

    Keyword options are those of :func:`arun`: ``target``, ``confidence``, ``method``, ``reference``,
    ``models``, ``prices``, ``labels``, ``compare``, ``compare_options``, ``simulated``, ``job``, ``seed``, ``out``, ``options``, ``journal``,
    ``run_id``, ``progress``, ``router``, ``scores``.

    ``scores``: for models whose provider gives no confidence, add virtual models that score their answers
    (``"consistency"``, ``"self-consistency"`` or ``"verbal"``; see :mod:`smartmix.backends.composite`),
    for ``method="cascade"``.
    """
    return run_sync(arun(data, **options))


async def arun(
    data: str | Path | Any | None = None,
    *,
    target: float = 0.9,
    confidence: float = 0.95,
    method: str = "mix",
    reference: str | None = None,
    models: Sequence[str] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    labels: Sequence[str] | None = None,
    compare: str | None = None,
    compare_options: Mapping[str, Any] | None = None,
    simulated: str | None = None,
    job: Job | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    options: EngineOptions | None = None,
    journal: CallJournal | None = None,
    run_id: str | None = None,
    progress: ProgressCallback | None = None,
    router: str | Path | None = None,
    scores: str | None = None,
    mode: str = "sync",
    batch_settings: Any = None,
    ray_settings: Any = None,
) -> RunResult:
    """The asynchronous form of :func:`run`."""
    try:
        guarantee = Guarantee(target, confidence)
    except ValueError as exc:
        raise ConfigError(f"{exc}; e.g. --target 0.9 --confidence 0.95") from None
    if job is None:
        job = resolve_job(
            data, reference=reference, models=models, prices=prices, labels=labels, simulated=simulated, seed=seed,
            compare=compare, compare_options=compare_options,
        )
    if scores:
        job = with_scores(job, scores)
    predicted = None
    if method == "router":
        if router is None:
            raise ConfigError("--method router needs a trained predictor: pass --router router.npz (smartmix router train)")
        predicted = predict_agreement(router, job)
    channel = application_backend(
        mode, backend=job.backend, journal_path=getattr(journal, "path", None), run_id=run_id,
        backend_factory=job.backend_factory, batch_settings=batch_settings, ray_settings=ray_settings,
    )
    engine = Engine(
        job.backend, job.pool, job.template, job.comparator, options=options, journal=journal, run_id=run_id,
        progress=progress, application_backend=channel,
    )
    if hasattr(job.backend, "attach_journal"):  # virtual models journal each real call they make
        job.backend.attach_journal(journal, run_id, engine.options.use_cache)
    try:
        result = await engine.run(job.items, method, guarantee, seed=seed, predicted=predicted)
    finally:
        await job.backend.aclose()
        if channel is not None:
            await channel.aclose()
    if channel is not None and hasattr(channel, "transport"):
        channel.transport.forget()  # every answer is in the run's journal now
    from smartmix.backends.composite import describe_scores

    if getattr(job.backend, "virtual", None):  # some models are judged by a score they bring themselves
        result.certificate.details["scores"] = describe_scores(job.pool, job.backend)
    if out is not None:
        result.write(out)
    return result


def with_scores(job: Job, kind: str, **options: Any) -> Job:
    """The job with one virtual model per candidate that scores its answers (``kind``: consistency,
    self-consistency or verbal); replays support only consistency (recorded outputs hold one sample)."""
    from dataclasses import replace

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


def predict_agreement(path: str | Path, job: Job):
    """Predicted agreement with the reference for every item and pool model (NaN where not predicted)."""
    import numpy as np

    from smartmix.router.predictor import AgreementPredictor

    predictor = AgreementPredictor.load(path)
    prompts = [
        next((m.content for m in reversed(job.template.render(item)) if m.role == "user"), "") for item in job.items
    ]
    predicted = predictor.predict(prompts)
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
) -> Job:
    if simulated is not None:
        return simulated_job(simulated, seed=seed)
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


__all__ = ["Job", "arun", "config_job", "make_comparator", "with_scores", "replay_job", "resolve_job", "run", "simulated_job", "load_items"]
