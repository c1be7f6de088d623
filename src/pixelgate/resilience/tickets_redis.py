"""WebSocket tickets in Redis, shared by every process of a scale-out deployment."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pixelgate.core.admission import Caller
from pixelgate.core.tickets import new_ticket, ticket_digest

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisTickets"]


class RedisTickets:
    """Tickets shared by every process of a scale-out deployment (``GETDEL``: once only)."""

    def __init__(self, redis: Redis, *, prefix: str, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._redis = redis
        self._prefix = f"{prefix}:wsticket:"

    async def issue(self, caller: Caller) -> str:
        ticket = new_ticket()
        value = json.dumps(
            {
                "account_id": caller.account_id,
                "account_name": caller.account_name,
                "is_admin": caller.is_admin,
                "key_id": caller.key_id,
            }
        )
        await self._redis.set(
            self._prefix + ticket_digest(ticket), value, px=max(1, int(self.ttl_s * 1000))
        )
        return ticket

    async def redeem(self, ticket: str) -> Caller | None:
        raw = await self._redis.getdel(self._prefix + ticket_digest(ticket))
        if raw is None:
            return None
        data = json.loads(raw)
        return Caller(
            account_id=data["account_id"],
            account_name=data["account_name"],
            is_admin=bool(data["is_admin"]),
            key_id=data.get("key_id"),
        )
