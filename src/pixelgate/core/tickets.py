"""Short-lived, single-use tickets that let a WebSocket connect without an API key in its URL.

A client authenticated as usual asks ``POST /v1/events/tickets`` for a ticket and opens
``…/ws?ticket=…``; redeeming the ticket gives back the caller it was issued to, once.
Embedded deployments keep tickets in memory; with ``PIXELGATE_REDIS_URL`` they live in
Redis (the process's client, the deployment's key prefix), so any API process can redeem
a ticket another one issued.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pixelgate.core.admission import Caller

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["MemoryTickets", "RedisTickets", "TicketStore", "open_tickets"]

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
        ticket = _new_ticket()
        self._tickets[_digest(ticket)] = (now + self.ttl_s, caller)
        return ticket

    async def redeem(self, ticket: str) -> Caller | None:
        entry = self._tickets.pop(_digest(ticket), None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]


class RedisTickets:
    """Tickets shared by every process of a scale-out deployment (``GETDEL``: once only)."""

    def __init__(self, redis: Redis, *, prefix: str, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._redis = redis
        self._prefix = f"{prefix}:wsticket:"

    async def issue(self, caller: Caller) -> str:
        ticket = _new_ticket()
        value = json.dumps(
            {
                "account_id": caller.account_id,
                "account_name": caller.account_name,
                "is_admin": caller.is_admin,
                "key_id": caller.key_id,
            }
        )
        await self._redis.set(
            self._prefix + _digest(ticket), value, px=max(1, int(self.ttl_s * 1000))
        )
        return ticket

    async def redeem(self, ticket: str) -> Caller | None:
        raw = await self._redis.getdel(self._prefix + _digest(ticket))
        if raw is None:
            return None
        data = json.loads(raw)
        return Caller(
            account_id=data["account_id"],
            account_name=data["account_name"],
            is_admin=bool(data["is_admin"]),
            key_id=data.get("key_id"),
        )


def open_tickets(ttl_s: float, *, redis: Redis | None = None, prefix: str = "") -> TicketStore:
    """Redis tickets when the process has a Redis client (scale-out), else memory."""
    if redis is None:
        return MemoryTickets(ttl_s)
    return RedisTickets(redis, prefix=prefix, ttl_s=ttl_s)


def _new_ticket() -> str:
    return TICKET_PREFIX + secrets.token_urlsafe(24)


def _digest(ticket: str) -> str:
    # only the hash is stored: a dump of the store holds no redeemable ticket
    return hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest()
