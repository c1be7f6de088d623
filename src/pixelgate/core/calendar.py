"""UTC days: where a day's budget resets, and the last N days of a report."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

__all__ = ["day_range", "utc_midnight"]


def utc_midnight(now: datetime) -> datetime:
    """The start of ``now``'s day (``now`` is UTC: daily budgets reset there)."""
    return datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)


def day_range(days: int, today: datetime) -> tuple[date, date]:
    """The last ``days`` UTC days, today included."""
    last = today.date()
    return last - timedelta(days=max(1, days) - 1), last
