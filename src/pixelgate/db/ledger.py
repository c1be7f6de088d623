"""Money: debits and refunds (at most one each per generation), grants, usage per day.

The functions run inside transaction functions (group commit); :class:`LedgerStore`
holds the account-level operations.
"""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, select, update

from pixelgate.core.bounds import MAX_CREDITS
from pixelgate.db.base import StoreBase
from pixelgate.db.billing import LockedAccount, Quota, QuotaState, quota_state, spent_today
from pixelgate.db.prepared import Prepared
from pixelgate.db.records import LEDGER
from pixelgate.db.setbased import upsert_rows
from pixelgate.db.tables import Account, LedgerEntry, UsageDaily
from pixelgate.errors import Conflict, InsufficientCredits, NotFound, ValidationFailed

__all__ = [
    "LEDGER",
    "USAGE",
    "USAGE_COUNTS",
    "USAGE_KEY",
    "LedgerStore",
    "add_up_usage",
    "add_usage",
    "add_usages",
    "debit",
    "ledger_row",
    "refund",
    "usage_row",
]

USAGE = cast(Table, UsageDaily.__table__)
USAGE_KEY = ("account_id", "day", "provider", "model")
USAGE_COUNTS = ("succeeded", "failed", "images", "credits", "usd", "latency_ms_total")
_INSERT_LEDGER = insert(LedgerEntry)
# the balance condition is part of the statement: concurrent admissions never overdraw
_DEBIT = Prepared(
    update(Account)
    .where(Account.id == bindparam("account_id"), Account.credits >= bindparam("amount"))
    .values(credits=Account.credits - bindparam("amount"))
    .returning(Account.credits)
)


@functools.cache
def _usage_upsert(dialect_name: str) -> Prepared:
    # One atomic upsert: an UPDATE-then-INSERT races when two workers finish jobs of the
    # same account/day/model at once (a unique violation that failed the job).
    # Built at first use: SQLite never loads the PostgreSQL dialect (~2.3 MB, ~20 ms).
    dialect: Any
    if dialect_name == "postgresql":
        from sqlalchemy.dialects import postgresql as dialect
    else:
        from sqlalchemy.dialects import sqlite as dialect
    stmt = dialect.insert(USAGE)
    return Prepared(
        stmt.on_conflict_do_update(
            index_elements=list(USAGE_KEY),
            set_={name: USAGE.c[name] + stmt.excluded[name] for name in USAGE_COUNTS},
        )
    )


def ledger_row(
    account_id: str, gen_id: str | None, kind: str, credits: int, reason: str, now: datetime
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "generation_id": gen_id,
        "kind": kind,
        "credits": credits,
        "reason": reason,
        "actor": "system",
        "created_at": now,
    }


def debit(c: Connection, account: LockedAccount, account_id: str, credits: int) -> int | None:
    """Take ``credits`` from a metered account; ``None`` for an unmetered one.

    The balance condition is in the statement, so concurrent admissions never overdraw.
    """
    balance = account.credits
    if balance is None:
        return None
    remaining = _DEBIT.scalar(c, {"account_id": account_id, "amount": credits})
    if remaining is None:
        raise InsufficientCredits(
            f"this generation costs {credits} credits; the balance is {balance}",
            balance=balance,
            price=credits,
        )
    return int(remaining)


def refund(c: Connection, gen_id: str, reason: str, now: datetime) -> int:
    """Refund a generation's debit at most once (the unique (generation, kind) holds it)."""
    rows = c.execute(
        select(LedgerEntry.kind, LedgerEntry.account_id, LedgerEntry.credits).where(
            LedgerEntry.generation_id == gen_id, LedgerEntry.kind.in_(("debit", "refund"))
        )
    ).all()
    kinds = {r[0]: r for r in rows}
    found = kinds.get("debit")
    if found is None or "refund" in kinds:
        return 0
    account_id, amount = found[1], -int(found[2])
    policy = c.scalar(select(Account.credit_policy).where(Account.id == account_id))
    if policy == "keep":
        return 0
    c.execute(_INSERT_LEDGER, ledger_row(account_id, gen_id, "refund", amount, reason, now))
    c.execute(
        update(Account).where(Account.id == account_id).values(credits=Account.credits + amount)
    )
    return amount


def add_usage(c: Connection, row: dict[str, Any]) -> None:
    """Add a :func:`usage_row` to the account's day (one atomic upsert)."""
    _usage_upsert(c.dialect.name).run(c, row)


def add_usages(c: Connection, totals: dict[tuple[str, ...], dict[str, Any]]) -> None:
    """Add :func:`add_up_usage`'s totals (one row per key) in one statement."""
    rows = [totals[key] for key in sorted(totals)]
    if len(rows) > 1 and c.dialect.name == "postgresql":
        upsert_rows(c, USAGE, rows, key=USAGE_KEY, add=USAGE_COUNTS)
    elif rows:
        _usage_upsert(c.dialect.name).run_many(c, rows)


def usage_row(
    account_id: str,
    provider: str,
    model: str,
    now: datetime,
    *,
    ok: bool,
    images: int,
    credits: int,
    usd: Decimal | None,
    provider_ms: int | None,
) -> dict[str, Any]:
    """What :func:`add_usage` adds to the account's day for one generation."""
    return {
        "account_id": account_id,
        "day": now.strftime("%Y-%m-%d"),
        "provider": provider,
        "model": model,
        "succeeded": 1 if ok else 0,
        "failed": 0 if ok else 1,
        "images": images,
        "credits": credits,
        "usd": usd or Decimal("0"),
        "latency_ms_total": provider_ms or 0,
    }


def add_up_usage(totals: dict[tuple[str, ...], dict[str, Any]], row: dict[str, Any]) -> None:
    """Add a :func:`usage_row` to ``totals`` (one row per account, day, provider and
    model: what one upsert statement may change)."""
    key = tuple(row[name] for name in USAGE_KEY)
    total = totals.get(key)
    if total is None:
        totals[key] = dict(row)
    else:
        for name in USAGE_COUNTS:
            total[name] += row[name]


class LedgerStore(StoreBase):
    """Balances, grants and what an account has spent."""

    async def ledger_sum(self, account_id: str) -> int:
        query = select(func.coalesce(func.sum(LedgerEntry.credits), 0)).where(
            LedgerEntry.account_id == account_id
        )
        return int(await self.read(lambda c: c.scalar(query)) or 0)

    async def grant_credits(self, account_id: str, credits: int, *, reason: str, actor: str) -> int:
        """Grant (positive) or revoke (negative) credits; returns the new balance."""
        if credits == 0:
            raise ValidationFailed("credits", "must not be zero")
        now = self.clock()

        def grant(c: Connection) -> int:
            query = select(Account.credits).where(Account.id == account_id)
            row = c.execute(query.with_for_update() if self.postgres else query).first()
            if row is None:
                raise NotFound("account not found")
            balance = (row[0] or 0) + credits
            if balance < 0:
                raise Conflict("the balance cannot become negative", code="negative_balance")
            if balance > MAX_CREDITS:
                raise ValidationFailed(
                    "credits",
                    f"the balance would become {balance}, over the maximum of {MAX_CREDITS}",
                    code="balance_out_of_range",
                )
            c.execute(update(Account).where(Account.id == account_id).values(credits=balance))
            entry = ledger_row(
                account_id, None, "grant" if credits > 0 else "revoke", credits, reason, now
            )
            c.execute(_INSERT_LEDGER, {**entry, "actor": actor})
            return balance

        self._forget_account(account_id)
        balance: int = await self.write(grant)
        self._forget_account(account_id)
        return balance

    async def spending(
        self, account_id: str, quota: Quota | None, now: datetime
    ) -> tuple[Decimal, QuotaState | None]:
        """Today's USD spend and, with ``quota``, the generations left in its window."""

        def read(c: Connection) -> tuple[Decimal, QuotaState | None]:
            spent = spent_today(c, account_id, now)
            return spent, quota_state(c, account_id, quota, now) if quota else None

        result: tuple[Decimal, QuotaState | None] = await self.read(read)
        return result
