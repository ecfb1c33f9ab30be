"""Virtual models that bring their own confidence score, for models whose provider gives none.

A virtual model answers with a real model's answer and a score computed from more real calls:

* ``consistency`` — ``"A|B"``: A's answer; score = share of the checker models (B, or B+C...) whose answer
  agrees with A's (the task's comparator decides). Costs A + B (+ C ...).
* ``self-consistency`` — ``"A@k"``: A's answer (the ordinary call); score = share of ``k`` more samples of
  A (temperature 0.7, seeds 1..k) that agree with it. Costs k + 1 calls of A.
* ``verbal`` — ``"A?"``: A's answer; then A is asked "Is your answer correct?" in the same conversation;
  score = 1 for yes, 0 for no (the pooled first-token probability of yes when the provider gives logprobs),
  0.5 when the reply is neither. Costs two calls of A.

:class:`CompositeBackend` wraps the real backend: requests for a virtual model make the real calls
(concurrently where they are independent) and come back as one completion whose ``cost_usd`` is what
those calls cost now and whose ``confidence`` is ``log(score)`` (so
:func:`smartmix.scores.confidence_score` reads the score back, also from the journal). With a journal
attached, every real call is written to it under the run ``<run_id>/parts`` before it is used, and read
back on a rerun instead of being paid again; the engine journals the virtual call itself (its cost is the
sum) in the run, so the run's total counts each dollar once. A virtual call pays all its real calls, even
when the same model was also called plainly for the same item (the parts carry a ``score_part_of``
parameter, which no provider is sent, so they are journaled and cached apart): the policy must see what a
virtual model costs when it is applied.

The score is an item feature fixed before anything is certified: whichever score a virtual model uses,
the certificate stays valid; a better score only makes the cascade cheaper.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from smartmix.backends.base import Backend
from smartmix.domain import Completion, Message, Request
from smartmix.errors import ConfigError
from smartmix.models import ModelSpec, Pool, estimate_tokens
from smartmix.tasks import Comparator, normalize_answer

__all__ = [
    "SCORE_KINDS",
    "VERBAL_QUESTION",
    "CompositeBackend",
    "VirtualModel",
    "virtual_models",
    "with_virtual_models",
    "verbal_score",
]

SCORE_KINDS = ("consistency", "self-consistency", "verbal")
VERBAL_QUESTION = "Is your answer above correct? Reply with one word: yes or no."
SAMPLE_TEMPERATURE = 0.7
_PARTS = "/parts"
PART_PARAM = "score_part_of"  # request parameter marking a virtual model's real call (never sent)
OWN_CONFIDENCE = "own confidence (first-token logprobs, or recorded), where given"


@dataclass(frozen=True)
class VirtualModel:
    """A virtual model: ``base``'s answer with a score of kind ``kind`` (see the module doc)."""

    name: str
    kind: str
    base: str
    checkers: tuple[str, ...] = ()
    samples: int = 0
    temperature: float = SAMPLE_TEMPERATURE
    question: str = VERBAL_QUESTION

    def __post_init__(self) -> None:
        if self.kind not in SCORE_KINDS:
            raise ConfigError(f"unknown score kind '{self.kind}'; choose one of: {', '.join(SCORE_KINDS)}")
        if self.kind == "consistency" and not self.checkers:
            raise ConfigError(f"virtual model {self.name}: a consistency score needs at least one other model")
        if self.kind == "self-consistency" and self.samples < 1:
            raise ConfigError(f"virtual model {self.name}: self-consistency needs at least 1 extra sample")

    @property
    def real_models(self) -> tuple[str, ...]:
        return (self.base, *self.checkers)

    def describe(self) -> str:
        if self.kind == "consistency":
            return f"consistency ({self.base}'s answer checked by {'+'.join(self.checkers)})"
        if self.kind == "self-consistency":
            return f"self-consistency ({self.samples} samples of {self.base} at T={self.temperature:g})"
        return f"verbal ({self.base} asked whether its answer is correct)"


def virtual_models(pool: Pool, kind: str, *, samples: int = 4, checkers: int = 1) -> list[VirtualModel]:
    """One virtual model per candidate of ``pool``.

    ``consistency``: each candidate checked by the ``checkers`` cheapest other candidates (named "A|B",
    "A|B+C"); ``self-consistency``: ``samples`` extra samples ("A@4"); ``verbal``: "A?".
    """
    if kind not in SCORE_KINDS:
        raise ConfigError(f"unknown score kind '{kind}'; choose one of: {', '.join(SCORE_KINDS)}")
    names = [s.name for s in pool.candidates]
    out = []
    for name in names:
        if kind == "consistency":
            others = [m for m in names if m != name][: max(1, checkers)]
            if not others:
                raise ConfigError(
                    "a consistency score needs two cheaper models (one checks the other); the pool has one. "
                    "Add a model, or use --scores self-consistency or verbal"
                )
            out.append(VirtualModel(f"{name}|{'+'.join(others)}", kind, name, checkers=tuple(others)))
        elif kind == "self-consistency":
            out.append(VirtualModel(f"{name}@{samples}", kind, name, samples=samples))
        else:
            out.append(VirtualModel(f"{name}?", kind, name))
    return out


def _virtual_spec(v: VirtualModel, pool: Pool) -> ModelSpec:
    """What a virtual call costs: the sum of its real calls (token prices when all have them)."""
    calls = {"consistency": 1, "self-consistency": v.samples + 1, "verbal": 2}[v.kind]
    specs = [pool.spec(m) for m in v.real_models]
    base = specs[0]
    if all(s.has_token_prices for s in specs):
        return ModelSpec(
            v.name,
            calls * base.input_price + sum(s.input_price for s in specs[1:]),  # type: ignore[operator]
            calls * base.output_price + sum(s.output_price for s in specs[1:]),  # type: ignore[operator]
            price_source=base.price_source,
        )
    total = calls * base.typical_call_price + sum(s.typical_call_price for s in specs[1:])
    if not math.isfinite(total):
        return ModelSpec(v.name, price_source="none")
    return ModelSpec(v.name, call_price=total, price_source=base.price_source)


def with_virtual_models(pool: Pool, virtual: Sequence[VirtualModel]) -> Pool:
    """The pool with the virtual models added as candidates (ordered by price like the others)."""
    for v in virtual:
        if v.name in pool:
            raise ConfigError(f"virtual model name '{v.name}' is already a model of the pool")
        for m in v.real_models:
            if m not in pool:
                raise ConfigError(f"virtual model '{v.name}' uses '{m}', which is not in the pool")
    return Pool([*pool.models, *(_virtual_spec(v, pool) for v in virtual)], pool.reference.name)


_YES = {"yes", "y", "true", "correct", "right"}
_NO = {"no", "n", "false", "incorrect", "wrong"}


def verbal_score(reply: Completion) -> float:
    """A yes/no reply as a score: P(yes) from first-token logprobs when given, else 1/0, else 0.5."""
    if reply.top_logprobs:
        yes = no = 0.0
        for token, logprob in reply.top_logprobs:
            word = normalize_answer(token)
            if word in _YES:
                yes += math.exp(logprob)
            elif word in _NO:
                no += math.exp(logprob)
        if yes + no > 0:
            return yes / (yes + no)
    words = re.findall(r"[a-z]+", (reply.text or "").casefold())
    if words and words[0] in _YES:
        return 1.0
    if words and words[0] in _NO:
        return 0.0
    return 0.5


class CompositeBackend:
    """Answers virtual models (see the module doc) with real calls to ``inner``; passes the rest through."""

    def __init__(self, inner: Backend, virtual: Sequence[VirtualModel], comparator: Comparator, pool: Pool):
        self.inner = inner
        self.virtual: dict[str, VirtualModel] = {v.name: v for v in virtual}
        self.comparator = comparator
        self.pool = pool
        self.journal: Any | None = None
        self.run_id: str | None = None
        self.use_cache = True
        self._writer: Any | None = None  # the parts run's BackgroundJournalWriter

    def attach_journal(self, journal: Any | None, run_id: str | None, use_cache: bool = True) -> None:
        """Journal every real call of a virtual model (run ``<run_id>/parts``), and read them back on reruns."""
        if self._writer is not None:  # attached before: that run's rows are committed first
            self._writer.close()
            self._writer = None
        self.journal = journal
        self.run_id = run_id
        self.use_cache = use_cache
        if journal is not None and run_id is not None and hasattr(journal, "start_run"):
            note = f"the real calls of run {run_id}'s virtual models; their cost is counted in that run"
            journal.start_run(f"{run_id}{_PARTS}", {"parts_of": run_id, "note": note}, None)
        if journal is not None:
            from smartmix.journal_writer import BackgroundJournalWriter

            parts_run = f"{run_id}{_PARTS}" if run_id is not None else None
            self._writer = BackgroundJournalWriter(journal, parts_run)  # type: ignore[arg-type]

    def describe(self) -> dict[str, str]:
        """For the certificate: which score each virtual model uses."""
        return {name: v.describe() for name, v in self.virtual.items()}

    async def complete(self, request: Request) -> Completion:
        v = self.virtual.get(request.model)
        if v is None:
            return await self.inner.complete(request)
        # Parts carry the virtual model's name (a parameter no provider is sent) so that they are journaled
        # and cached apart from plain calls: the policy must see what a virtual call costs when applied.
        request = replace(request, params=tuple(sorted({**dict(request.params), PART_PARAM: v.name}.items())))
        base = replace(request, model=v.base)
        if v.kind == "consistency":
            parts = await asyncio.gather(self._part(base), *(self._part(replace(request, model=m)) for m in v.checkers))
            answer, checks = parts[0], parts[1:]
            score = sum(self.comparator.agree(c.text, answer.text) for c in checks) / len(checks)
        elif v.kind == "self-consistency":
            params = dict(request.params)
            params.update(temperature=v.temperature)
            samples = [
                replace(base, params=tuple(sorted({**params, "seed": j}.items()))) for j in range(1, v.samples + 1)
            ]
            parts = await asyncio.gather(self._part(base), *(self._part(s) for s in samples))
            answer = parts[0]
            score = sum(self.comparator.agree(s.text, answer.text) for s in parts[1:]) / v.samples
        else:
            answer = await self._part(base)
            params = {k: val for k, val in request.params if k not in ("max_tokens", "max_completion_tokens")}
            follow = Request(
                model=v.base,
                messages=(*request.messages, Message("assistant", answer.text), Message("user", v.question)),
                item_id=request.item_id,
                params=tuple(sorted({**params, "max_tokens": 3}.items())),
            )
            reply = await self._part(follow)
            parts = [answer, reply]
            score = verbal_score(reply)
        if self.comparator.parse(answer.text) is None:
            score = 0.0  # an unreadable answer is never kept on its score
        cost = sum(float(p.extra["cost_now"]) for p in parts)
        return Completion(
            model=request.model,
            text=answer.text,
            input_tokens=sum(p.input_tokens or 0 for p in parts),
            output_tokens=sum(p.output_tokens or 0 for p in parts),
            cost_usd=cost,
            confidence=math.log(max(score, 1e-12)),
            latency_ms=max((p.latency_ms or 0.0) for p in parts) or None,
            extra={"score": score, "score_kind": v.kind, "parts": [p.model for p in parts], "virtual": True},
        )

    async def _part(self, request: Request) -> Completion:
        """One real call: read back from the journal when already paid, else made, priced and journaled."""
        parts_run = f"{self.run_id}{_PARTS}" if self.run_id is not None else None
        if self.journal is not None:
            hit = self.journal.lookup(request, run_id=parts_run, or_any_run=self.use_cache)
            if hit is not None:
                paid_here = hit.extra.get("journal_run_id") == parts_run
                # paid by this run before a rerun: counts; by another run: free now (the engine's cache rule)
                hit.extra["cost_now"] = float(hit.cost_usd or 0.0) if paid_here else 0.0
                return hit
        completion = await self.inner.complete(request)
        cost = self._price(request, completion)
        completion.cost_usd = cost
        if self._writer is not None:  # committed before the answer is used, like the engine's own calls
            await self._writer.commit(request, completion, "part", cost)
        completion.extra["cost_now"] = cost
        return completion

    def _price(self, request: Request, completion: Completion) -> float:
        if completion.cost_usd is not None:
            return float(completion.cost_usd)
        spec = self.pool.spec(request.model)
        n_in, n_out = completion.input_tokens, completion.output_tokens
        if (n_in is None or n_out is None) and spec.call_price is None:
            n_in = estimate_tokens(request.prompt_text) if n_in is None else n_in
            n_out = max(1, estimate_tokens(completion.text)) if n_out is None else n_out
        return spec.cost(n_in, n_out)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.journal is not None and self.run_id is not None and hasattr(self.journal, "finish_run"):
            self.journal.finish_run(f"{self.run_id}{_PARTS}", "done")
        await self.inner.aclose()


def describe_scores(pool: Pool, backend: Any) -> dict[str, str]:
    """Which score each candidate is judged by, for the certificate."""
    virtual: Mapping[str, VirtualModel] = getattr(backend, "virtual", {}) or {}
    out = {}
    for spec in pool.candidates:
        v = virtual.get(spec.name)
        out[spec.name] = v.describe() if v else OWN_CONFIDENCE
    return out
