"""What one served request paid, and the journal rows that say so.

Every answer a provider billed is one :meth:`Bill.charge`: a cascade's cheap call that was not kept, a
garbage answer that was retried, the answer returned. The request's reported cost (the ``smartmix`` field
and ``x-smartmix-cost-usd``) is the sum, and each charge is one journal row, so the journal's rows match
the provider's paid calls and its costs match what clients were told.

Rows hold what the journal always held for a served request: model, answer, cost and a hash of the
provider's response id; never the prompt or a key.
"""

from __future__ import annotations

import hashlib
from typing import Any

from smartmix.backends.http import dumps
from smartmix.domain import Completion, Message, Request
from smartmix.journal_writer import BackgroundJournalWriter
from smartmix.models import Pool
from smartmix.serve.responses import answer_text

__all__ = ["Bill", "ServedJournal"]


class ServedJournal:
    """Served calls into a journal run, through a :class:`~smartmix.journal_writer.BackgroundJournalWriter`."""

    def __init__(self, writer: BackgroundJournalWriter):
        self.writer = writer

    def record(self, model: str, route: str, response: dict | None, api: str, cost: float, usable: bool) -> None:
        response_id = response.get("id", "") if response is not None else ""
        digest = hashlib.sha256(dumps(response_id)).hexdigest()
        request = Request(model=model, messages=(Message("user", digest),), item_id=None)
        extra: dict[str, Any] = {} if usable else {"usable": False, "route": route}
        usage = (response or {}).get("usage")
        usage = usage if isinstance(usage, dict) else {}
        completion = Completion(
            model=model, text=answer_text(response, api) if response is not None else "",
            input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens"), extra=extra,
        )
        self.writer.record(request, completion, "serve", cost)


class Bill:
    """The paid calls of one request."""

    __slots__ = ("api", "journal", "pool", "route", "total")

    def __init__(self, pool: Pool, journal: ServedJournal | None, route: str, api: str):
        self.pool = pool
        self.journal = journal
        self.route = route
        self.api = api
        self.total = 0.0

    def price(self, model: str, response: dict | None) -> float:
        usage = (response or {}).get("usage")
        if not isinstance(usage, dict):
            return 0.0
        try:
            cost = self.pool.spec(model).cost(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        except Exception:  # noqa: BLE001 - a usage block the price cannot read: the call is still journaled
            return 0.0
        return cost if isinstance(cost, float | int) and cost == cost else 0.0

    def charge(self, model: str, response: dict | None, usable: bool = True) -> float:
        cost = self.price(model, response)
        self.total += cost
        if self.journal is not None:
            self.journal.record(model, self.route, response, self.api, cost, usable)
        return cost
