"""Admission checks that run inside the admission transaction: quotas and budgets.

Plain synchronous functions over a Core ``Connection``: they run inside a transaction
function of the group-commit writer (:mod:`pixelgate.db.writer`).

The generations table is the log of a sliding-window quota: counting an
account's generations inside the window, in the same transaction that inserts
the next one, is exact under concurrency (the account row is locked first) and
survives restarts — which an in-memory counter would not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import Connection, bindparam, case, func, select

from pixelgate.core.calendar import utc_midnight
from pixelgate.core.models import Status
from pixelgate.core.records import Quota, QuotaState
from pixelgate.db.prepared import Prepared
from pixelgate.db.tables import Account, Generation
from pixelgate.errors import BudgetExceeded, RateLimited

if TYPE_CHECKING:
    pass

__all__ = [
    "LockedAccount",
    "Quota",
    "QuotaState",
    "check_budget",
    "check_quota",
    "lock_account",
    "spent_today",
]


@dataclass(frozen=True)
class LockedAccount:
    """What admission needs of the account row it has locked."""

    #: ``None``: an unmetered account
    credits: int | None
    daily_budget_usd: Decimal | None


# Built once: on every admission, a statement's construction and cache key cost more
# than its execution.
_READ_ACCOUNT_STATEMENT = select(Account.credits, Account.daily_budget_usd).where(
    Account.id == bindparam("account_id")
)
_READ_ACCOUNT = Prepared(_READ_ACCOUNT_STATEMENT)
_LOCK_ACCOUNT = Prepared(_READ_ACCOUNT_STATEMENT.with_for_update())


def lock_account(c: Connection, account_id: str, *, always: bool = True) -> LockedAccount:
    """Serialise admissions of one account (PostgreSQL row lock; SQLite has one writer)
    and read its balance and budget in the same statement.

    Without ``always`` the row is locked only when it carries a balance or a budget (an
    unmetered account's admissions do not depend on each other); whether it does is
    read in this transaction, so the decision is exact.
    """
    params = {"account_id": account_id}
    postgres = c.dialect.name == "postgresql"
    row = (_LOCK_ACCOUNT if postgres and always else _READ_ACCOUNT).first(c, params)
    if row is None:
        return LockedAccount(credits=None, daily_budget_usd=None)
    if postgres and not always and (row[0] is not None or row[1] is not None):
        row = _LOCK_ACCOUNT.first(c, params)
        assert row is not None
    return LockedAccount(credits=row[0], daily_budget_usd=row[1])


def window_start(now: datetime, window_s: int) -> datetime:
    """Start of the fixed window holding ``now``: windows are aligned to the Unix epoch, so
    a 86 400 s one starts at UTC midnight."""
    seconds = int(now.timestamp())
    return datetime.fromtimestamp(seconds - seconds % window_s, tz=UTC)


def quota_state(c: Connection, account_id: str, quota: Quota, now: datetime) -> QuotaState:
    if quota.fixed:
        start = window_start(now, quota.window_s)
        since_clause = Generation.created_at >= start
    else:
        since_clause = Generation.created_at > now - timedelta(seconds=quota.window_s)
    row = c.execute(
        select(func.count(), func.min(Generation.created_at)).where(
            Generation.account_id == account_id, since_clause
        )
    ).one()
    used, oldest = int(row[0]), row[1]
    if oldest is not None and oldest.tzinfo is None:  # aggregate results skip the type
        oldest = oldest.replace(tzinfo=UTC)
    reset_at = (start if quota.fixed else (oldest or now)) + timedelta(seconds=quota.window_s)
    return QuotaState(
        limit=quota.limit,
        remaining=max(0, quota.limit - used),
        reset_at=reset_at,
        window_s=quota.window_s,
    )


def check_quota(c: Connection, account_id: str, quota: Quota, now: datetime) -> QuotaState:
    """The state after admitting one more; raises ``RateLimited`` when none is left."""
    state = quota_state(c, account_id, quota, now)
    if state.remaining <= 0:
        raise RateLimited(
            f"Rate limit exceeded for your tier: {quota.limit} generations per {quota.window_s} s",
            retry_after=max(1.0, (state.reset_at - now).total_seconds()),
            limit=quota.limit,
            remaining=0,
            reset_at=state.reset_at.timestamp(),
        )
    return QuotaState(
        limit=state.limit,
        remaining=state.remaining - 1,
        reset_at=state.reset_at,
        window_s=quota.window_s,
    )


def spent_today(c: Connection, account_id: str, now: datetime) -> Decimal:
    """USD of today's (UTC) generations: real cost once known, the estimate while running."""
    running = (Status.PENDING.value, Status.PROCESSING.value)
    amount = case(
        (Generation.cost_usd.is_not(None), Generation.cost_usd),
        (Generation.status.in_(running), func.coalesce(Generation.estimated_usd, 0)),
        else_=0,
    )
    total = c.scalar(
        select(func.coalesce(func.sum(amount), 0)).where(
            Generation.account_id == account_id,
            Generation.created_at >= utc_midnight(now),
        )
    )
    return Decimal(str(total or 0))


def check_budget(
    c: Connection,
    account: LockedAccount,
    account_id: str,
    estimate: Decimal | None,
    now: datetime,
) -> None:
    """Raise ``BudgetExceeded`` when today's spend plus ``estimate`` passes the daily budget."""
    budget = account.daily_budget_usd
    if budget is None:
        return
    spent = spent_today(c, account_id, now)
    needed = estimate or Decimal("0")
    if spent + needed > budget:
        resets = utc_midnight(now) + timedelta(days=1)
        raise BudgetExceeded(
            f"daily budget of ${budget} would be exceeded: ${spent} spent today, this "
            f"request is estimated at ${needed}",
            budget=budget,
            spent=spent,
            estimate=needed,
            resets_at=resets,
        )
