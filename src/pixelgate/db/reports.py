"""Read-only reports: usage per day/provider/model, stats over all accounts, ledgers."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select

from pixelgate.db.engine import Database
from pixelgate.db.records import LEDGER
from pixelgate.db.tables import Account, Generation, LedgerEntry, UsageDaily
from pixelgate.money import format_usd

__all__ = ["Reports"]


def _usd(value: Any) -> str:
    """A summed amount: an empty sum is $0."""
    return format_usd(value or 0) or "0"


class Reports:
    """Aggregations over ``usage_daily``, ``generations`` and ``ledger_entries``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def usage(
        self, *, account_id: str | None, first_day: date, last_day: date
    ) -> list[dict[str, Any]]:
        """Rows per day, provider and model (``account_id`` None: all accounts summed)."""
        cols = (UsageDaily.day, UsageDaily.provider, UsageDaily.model)
        query = (
            select(
                *cols,
                func.sum(UsageDaily.succeeded),
                func.sum(UsageDaily.failed),
                func.sum(UsageDaily.images),
                func.sum(UsageDaily.credits),
                func.sum(UsageDaily.usd),
                func.sum(UsageDaily.latency_ms_total),
            )
            .where(UsageDaily.day >= first_day.isoformat(), UsageDaily.day <= last_day.isoformat())
            .group_by(*cols)
            .order_by(UsageDaily.day.desc(), UsageDaily.provider, UsageDaily.model)
        )
        if account_id is not None:
            query = query.where(UsageDaily.account_id == account_id)
        rows = await self.db.run(lambda c: c.execute(query).all())
        result = []
        for day, provider, model, ok, failed, images, credits, usd, latency in rows:
            ok, failed = int(ok or 0), int(failed or 0)
            result.append(
                {
                    "date": day,
                    "provider": provider,
                    "model": model,
                    "generations": ok + failed,
                    "succeeded": ok,
                    "failed": failed,
                    "images": int(images or 0),
                    "credits": int(credits or 0),
                    "usd": _usd(usd),
                    "avg_latency_ms": round(int(latency or 0) / ok) if ok else None,
                }
            )
        return result

    async def stats(self, *, first_day: date, last_day: date) -> dict[str, Any]:
        """Seed 001's ``/admin/stats``: totals, per day and per provider over all accounts."""
        rows = await self.usage(account_id=None, first_day=first_day, last_day=last_day)
        totals: dict[str, Any] = {
            "generations": 0,
            "succeeded": 0,
            "failed": 0,
            "images": 0,
            "credits": 0,
        }
        usd = Decimal("0")
        by_day: dict[str, dict[str, Any]] = {}
        by_provider: dict[str, dict[str, Any]] = {}
        for row in rows:
            for bucket in (
                totals,
                by_day.setdefault(row["date"], {k: 0 for k in totals} | {"usd": "0"}),
                by_provider.setdefault(row["provider"], {k: 0 for k in totals} | {"usd": "0"}),
            ):
                for key in totals:
                    bucket[key] += row[key]
                if bucket is not totals:
                    bucket["usd"] = _usd(Decimal(bucket["usd"]) + Decimal(row["usd"]))
            usd += Decimal(row["usd"])
        rate = totals["succeeded"] / totals["generations"] if totals["generations"] else None

        def counts(c: Connection) -> tuple[Any, dict[str, Any]]:
            accounts = c.scalar(select(func.count()).select_from(Account))
            statuses = select(Generation.status, func.count()).group_by(Generation.status)
            return accounts, dict(c.execute(statuses).all())

        accounts, by_status = await self.db.run(counts)
        return {
            "from": first_day.isoformat(),
            "to": last_day.isoformat(),
            "totals": totals | {"usd": _usd(usd), "success_rate": rate},
            "by_day": by_day,
            "by_provider": by_provider,
            "accounts": int(accounts or 0),
            "generations_by_status": {k: int(v) for k, v in by_status.items()},
        }

    async def ledger(self, account_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        query = (
            select(LEDGER)
            .where(LedgerEntry.account_id == account_id)
            .order_by(LedgerEntry.id.desc())
            .limit(limit)
        )
        rows = await self.db.run(lambda c: c.execute(query).all())
        return [
            {
                "id": e.id,
                "kind": e.kind,
                "credits": e.credits,
                "generation_id": e.generation_id,
                "reason": e.reason,
                "actor": e.actor,
                "created_at": e.created_at,
            }
            for e in rows
        ]

    async def projects(self, account_id: str) -> list[str]:
        query = (
            select(Generation.project)
            .where(Generation.account_id == account_id)
            .distinct()
            .order_by(Generation.project)
        )
        return list(await self.db.run(lambda c: c.scalars(query).all()))


