"""SQL of the observability features: queue gauges, alert windows, the alerts table.

Reads only, except the alerts table; nothing here runs on a request's or a job's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pixelgate.core.ids import new_id
from pixelgate.db.engine import Database
from pixelgate.db.tables import Alert, Generation

__all__ = ["ALERTS", "AlertStore", "QueueStats", "WindowStats"]

ALERTS = cast(Table, Alert.__table__)
GEN = cast(Table, Generation.__table__)
WAITING = ("PENDING", "PROCESSING")
FINISHED = ("SUCCEEDED", "FAILED")
#: "providers" that are not provider calls: the fallback image, the dedup cache
NOT_PROVIDERS = frozenset({"default", "cache"})
#: finished jobs are found through the claim index (status, run_after): a job is counted
#: if it became runnable at most this long before its window (longer waits are missed)
MAX_QUEUE_WAIT = timedelta(hours=1)


@dataclass(frozen=True)
class QueueStats:
    """Jobs waiting or running, and the oldest one's admission time, per status."""

    count: int
    oldest: datetime | None


@dataclass(frozen=True)
class WindowStats:
    """Finished generations of one provider (or of all: ``provider`` None) in a window."""

    provider: str | None
    succeeded: int
    failed: int
    #: average provider time of the succeeded ones, ms
    avg_provider_ms: float | None

    @property
    def total(self) -> int:
        return self.succeeded + self.failed


class AlertStore:
    """Queue and window aggregates over ``generations``; alert rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def queue(self) -> dict[str, QueueStats]:
        """PENDING and PROCESSING: how many, and since when the oldest waits."""
        query = (
            select(GEN.c.status, func.count(), func.min(GEN.c.created_at))
            .where(GEN.c.status.in_(WAITING))
            .group_by(GEN.c.status)
        )
        rows = await self.db.run(lambda c: c.execute(query).all())
        found = {status: QueueStats(int(n), _utc(oldest)) for status, n, oldest in rows}
        return {s: found.get(s, QueueStats(0, None)) for s in WAITING}

    async def window(self, since: datetime) -> list[WindowStats]:
        """Per provider, generations finished since ``since`` (provider None: failed before
        any call; ``default``: answered with the fallback image; ``cache``: a cache hit)."""
        ok = GEN.c.status == "SUCCEEDED"
        query = (
            select(
                GEN.c.provider,
                func.sum(case((ok, 1), else_=0)),
                func.sum(case((ok, 0), else_=1)),
                func.avg(case((ok, GEN.c.provider_ms), else_=None)),
            )
            .where(
                GEN.c.status.in_(FINISHED),
                GEN.c.run_after >= since - MAX_QUEUE_WAIT,
                GEN.c.completed_at >= since,
            )
            .group_by(GEN.c.provider)
        )
        rows = await self.db.run(lambda c: c.execute(query).all())
        return [
            WindowStats(
                provider, int(ok_n or 0), int(bad or 0), float(avg) if avg is not None else None
            )
            for provider, ok_n, bad, avg in rows
        ]

    # Alerts -----------------------------------------------------------------------

    async def raise_alert(
        self,
        *,
        rule: str,
        subject: str,
        value: float,
        threshold: float,
        message: str,
        now: datetime,
    ) -> dict[str, Any] | None:
        """Insert a firing alert; None if one is already firing for ``rule``/``subject``
        (raised by this or another process)."""
        row = {
            "id": new_id("alrt"),
            "rule": rule,
            "subject": subject,
            "active_key": f"{rule}:{subject}",
            "status": "firing",
            "value": value,
            "threshold": threshold,
            "message": message,
            "raised_at": now,
            "resolved_at": None,
        }

        def create(c: Connection) -> None:
            c.execute(insert(ALERTS).values(**row))

        [(ok, error)] = await self.db.run_batch([create])
        if not ok:
            if isinstance(error, IntegrityError):
                return None
            raise error
        return _public(row)

    async def resolve_alert(self, rule: str, subject: str, now: datetime) -> dict[str, Any] | None:
        """Resolve the firing alert of ``rule``/``subject``; None if none was (any more)."""
        key = f"{rule}:{subject}"

        def resolve(c: Connection) -> Any:
            found = c.execute(select(ALERTS).where(ALERTS.c.active_key == key)).first()
            if found is None:
                return None
            done = c.execute(
                update(ALERTS)
                .where(and_(ALERTS.c.id == found.id, ALERTS.c.status == "firing"))
                .values(status="resolved", active_key=None, resolved_at=now)
            )
            if done.rowcount != 1:
                return None
            return {**found._asdict(), "status": "resolved", "resolved_at": now}

        [(ok, result)] = await self.db.run_batch([resolve])
        if not ok:
            raise result
        return _public(result) if result is not None else None

    async def alerts(self, *, active: bool, limit: int = 100) -> list[dict[str, Any]]:
        """Firing alerts (``active``), or every alert, newest first."""
        query = select(ALERTS).order_by(ALERTS.c.raised_at.desc(), ALERTS.c.id.desc())
        if active:
            query = query.where(ALERTS.c.status == "firing")
        query = query.limit(limit)
        rows = await self.db.run(lambda c: c.execute(query).all())
        return [_public(row._asdict()) for row in rows]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        value = _utc(value)
        return value.isoformat().replace("+00:00", "Z") if value is not None else None

    return {
        "id": row["id"],
        "rule": row["rule"],
        "subject": row["subject"],
        "status": row["status"],
        "value": float(row["value"]),
        "threshold": float(row["threshold"]),
        "message": row["message"],
        "raised_at": iso(row["raised_at"]),
        "resolved_at": iso(row["resolved_at"]),
    }


def _utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is not None and value.tzinfo is None:  # aggregates skip the column type
        return value.replace(tzinfo=UTC)
    return value
