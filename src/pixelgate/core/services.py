"""The one object routes call besides the pipeline: records, reports, account summaries.

Built by the composition root (:mod:`pixelgate.runtime`) over the store of records
(:class:`~pixelgate.core.queries.ApiRecords`) and the reports
(:class:`~pixelgate.core.queries.ReportReads`); routes turn what it returns into HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pixelgate.config import Settings, TierSettings
from pixelgate.core.calendar import day_range
from pixelgate.core.models import AccountView
from pixelgate.core.queries import ApiRecords, ReportReads
from pixelgate.core.records import Quota, QuotaState

__all__ = ["AccountSummary", "Services"]


@dataclass(frozen=True)
class AccountSummary:
    """An account with its tier, what it spent today, its quota left and its projects."""

    account: AccountView
    tier: TierSettings
    now: datetime
    spent_today_usd: Decimal
    quota: QuotaState | None
    projects: list[str]


class Services:
    """Reads and changes outside the pipeline, for the API, the UI and integrations."""

    def __init__(self, *, settings: Settings, records: ApiRecords, reports: ReportReads) -> None:
        self.settings = settings
        #: generations, batches, images, templates, accounts, keys, hot configuration
        self.records = records
        self.reports = reports

    def last_days(self, days: int) -> tuple[date, date]:
        """The last ``days`` UTC days by the store's clock, today included."""
        return day_range(days, self.records.clock())

    async def account_summary(self, account: AccountView) -> AccountSummary:
        """Balance, tier, quota left, today's spending and the projects of one account."""
        now = self.records.clock()
        tier = self.settings.tier(account.tier)
        spent, quota = await self.records.spending(account.id, Quota.of_tier(tier), now)
        return AccountSummary(
            account=account,
            tier=tier,
            now=now,
            spent_today_usd=spent,
            quota=quota,
            projects=await self.reports.projects(account.id),
        )

    async def ledger(
        self, account_id: str, *, limit: int
    ) -> tuple[int | None, list[dict[str, Any]]]:
        """The newest ``limit`` ledger entries and the balance after them."""
        entries = await self.reports.ledger(account_id, limit=limit)
        account = await self.records.get_account(account_id)
        return account.credits, entries

    async def usage(
        self, account_id: str | None, days: int
    ) -> tuple[date, date, list[dict[str, Any]]]:
        """Usage per day, provider and model over the last ``days`` days (None: all accounts)."""
        first, last = self.last_days(days)
        rows = await self.reports.usage(account_id=account_id, first_day=first, last_day=last)
        return first, last, rows

    async def stats(self, *, first_day: date, last_day: date) -> dict[str, Any]:
        """Generations, success, latency and spend per day over all accounts."""
        return await self.reports.stats(first_day=first_day, last_day=last_day)
