"""Operator state: hot configuration versions and webhook deliveries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pixelgate.core.ids import new_id
from pixelgate.db.base import StoreBase, utcnow
from pixelgate.db.records import CONFIG, DELIVERIES, WebhookDeliveryView
from pixelgate.errors import Conflict

__all__ = ["OperationsStore"]

_DELIVERY_FIELDS = (
    "id",
    "generation_id",
    "account_id",
    "event",
    "url",
    "status",
    "attempts",
    "response_status",
    "error",
    "created_at",
    "updated_at",
    "delivered_at",
)


def _config_record(row: Any) -> dict[str, Any]:
    return {
        "version": int(row.id),
        "data": dict(row.data or {}),
        "actor": row.actor,
        "created_at": row.created_at,
    }


class OperationsStore(StoreBase):
    """Hot configuration and webhook deliveries."""

    # Hot configuration --------------------------------------------------------

    async def latest_config_version(self) -> int:
        """The newest hot-configuration version (0: none stored)."""
        return int(await self.read(lambda c: c.scalar(select(func.max(CONFIG.c.id)))) or 0)

    async def latest_config(self) -> dict[str, Any] | None:
        query = select(CONFIG).order_by(CONFIG.c.id.desc()).limit(1)
        row = await self.read(lambda c: c.execute(query).first())
        return _config_record(row) if row is not None else None

    async def save_config(
        self, data: dict[str, Any], *, actor: str | None, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Store a new hot-configuration version; ``Conflict`` if another was stored since
        ``expected_version``."""

        def save(c: Connection) -> dict[str, Any]:
            if expected_version is not None:
                latest = int(c.scalar(select(func.max(CONFIG.c.id))) or 0)
                if latest != expected_version:
                    raise Conflict(
                        f"the configuration is at version {latest}, not {expected_version}",
                        code="config_version_conflict",
                    )
            row = c.execute(
                insert(CONFIG)
                .values(data=data, actor=actor, created_at=utcnow())
                .returning(*CONFIG.c)
            ).one()
            return _config_record(row)

        record: dict[str, Any] = await self.write(save)
        return record

    async def config_versions(self, limit: int = 20) -> list[dict[str, Any]]:
        query = select(CONFIG).order_by(CONFIG.c.id.desc()).limit(limit)
        return [_config_record(r) for r in await self.read(lambda c: c.execute(query).all())]

    # Webhook deliveries ---------------------------------------------------------

    async def create_webhook_delivery(
        self, *, generation_id: str, account_id: str, event: str, url: str, payload: str
    ) -> str | None:
        """Record a pending delivery; ``None`` when this event was already recorded."""
        now = self.clock()
        delivery_id = new_id("whd")
        values = {
            "id": delivery_id,
            "generation_id": generation_id,
            "account_id": account_id,
            "event": event,
            "url": url,
            "payload": payload,
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }

        def create(c: Connection) -> None:
            c.execute(insert(DELIVERIES), values)

        try:
            await self.write(create)
        except IntegrityError:
            return None
        return delivery_id

    async def record_webhook_attempt(
        self,
        delivery_id: str,
        *,
        status: str,
        attempts: int,
        response_status: int | None,
        error: str | None,
    ) -> None:
        """Update a delivery after an attempt: ``pending``, ``delivered`` or ``failed``."""
        now = self.clock()

        def record(c: Connection) -> None:
            c.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id == delivery_id)
                .values(
                    status=status,
                    attempts=attempts,
                    response_status=response_status,
                    error=error,
                    updated_at=now,
                    delivered_at=now if status == "delivered" else None,
                )
            )

        await self.write(record)

    async def list_webhook_deliveries(
        self, *, account_id: str | None, generation_id: str | None = None, limit: int = 50
    ) -> list[WebhookDeliveryView]:
        """Newest first; ``account_id`` None lists every account's (admin)."""
        query = select(*(DELIVERIES.c[name] for name in _DELIVERY_FIELDS))
        if account_id is not None:
            query = query.where(DELIVERIES.c.account_id == account_id)
        if generation_id is not None:
            query = query.where(DELIVERIES.c.generation_id == generation_id)
        query = query.order_by(DELIVERIES.c.created_at.desc(), DELIVERIES.c.id.desc()).limit(limit)
        rows = await self.read(lambda c: c.execute(query).all())
        return [WebhookDeliveryView(**dict(r._mapping)) for r in rows]
