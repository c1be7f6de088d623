"""Short-lived, single-use tickets that let a WebSocket connect without an API key in its URL.

A client authenticated as usual asks ``POST /v1/events/tickets`` for a ticket and opens
``…/ws?ticket=…``; redeeming the ticket gives back the caller it was issued to, once.
Embedded deployments keep tickets in memory; with ``PIXELGATE_REDIS_URL`` they live in
Redis (:mod:`pixelgate.resilience.tickets_redis`), so any API process can redeem a ticket
another one issued.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from pixelgate.core.admission import Caller

__all__ = ["TICKET_PREFIX", "MemoryTickets", "TicketStore", "new_ticket", "ticket_digest"]

TICKET_PREFIX = "wst_"
#: memory tickets kept at most (a flood of unused ones cannot grow the process)
MAX_MEMORY_TICKETS = 100_000


class TicketStore(Protocol):
    """Issues tickets for a caller and redeems each one once before it expires."""

    ttl_s: float

    async def issue(self, caller: Caller) -> str:
        """A new ticket standing for ``caller`` for ``ttl_s`` seconds."""

    async def redeem(self, ticket: str) -> Caller | None:
        """The caller the ticket was issued to; None if unknown, expired or used before."""


class MemoryTickets:
    """Tickets of one process (the embedded deployment)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._tickets: dict[str, tuple[float, Caller]] = {}

    async def issue(self, caller: Caller) -> str:
        now = self._clock()
        if len(self._tickets) >= MAX_MEMORY_TICKETS:
            self._tickets = {k: v for k, v in self._tickets.items() if v[0] > now}
            if len(self._tickets) >= MAX_MEMORY_TICKETS:
                self._tickets.pop(next(iter(self._tickets)))
        ticket = new_ticket()
        self._tickets[ticket_digest(ticket)] = (now + self.ttl_s, caller)
        return ticket

    async def redeem(self, ticket: str) -> Caller | None:
        entry = self._tickets.pop(ticket_digest(ticket), None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]


def new_ticket() -> str:
    """A fresh unguessable ticket."""
    return TICKET_PREFIX + secrets.token_urlsafe(24)


def ticket_digest(ticket: str) -> str:
    """What is stored of a ticket."""
    # only the hash is stored: a dump of the store holds no redeemable ticket
    return hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest()
