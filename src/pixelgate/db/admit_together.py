"""A group commit's admissions on PostgreSQL, set-based: their rows in one statement per
table instead of three or four statements per job.

An admission with no quota, no cache and no links (:class:`PlainAdmission`) writes its
generation row, its ``queued`` event and, on a metered account, its debit and ledger
row. Through SQLAlchemy and asyncpg each statement costs far more Python than
PostgreSQL spends on it (the admissions' group commit was 38 % of the scale-out API's
GIL samples, measured), so the admissions of one batch share them: one read of their
accounts, one locking read of the metered ones (in id order), one compare-and-set
``UPDATE`` of their balances, and one ``INSERT … SELECT FROM json_to_recordset`` each
for generations, events and ledger rows (:mod:`pixelgate.db.setbased`).

The money check stays exact: a metered account's row is locked (``FOR UPDATE``) before
its balance is read, the debits are taken in the batch's order from that balance, and
the ``UPDATE`` changes the balance only if it is still the one read. An admission the
balance cannot pay for, a duplicate key, any statement that fails: the set-based form
raises, the group commit rolls the batch's savepoint back and runs every admission
alone (:func:`pixelgate.db.engine._one_by_one`), so the error is that job's own. An
account with a daily budget is checked against today's spend job by job (its
admissions run their own function, in this transaction).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, String, Table, any_, bindparam, select

from pixelgate.db.engine import TxFunction, dispatch
from pixelgate.db.ledger import LEDGER, ledger_row
from pixelgate.db.records import EVT, GEN
from pixelgate.db.rows import event_row
from pixelgate.db.setbased import insert_rows, update_rows
from pixelgate.db.tables import Account
from pixelgate.errors import InsufficientCredits

__all__ = ["PlainAdmission", "admit_together"]

ACCOUNTS = cast(Table, Account.__table__)


def _accounts_statement(*, lock: bool) -> Any:
    from sqlalchemy.dialects.postgresql import ARRAY

    ids = bindparam("ids", type_=ARRAY(String))
    query = select(ACCOUNTS.c.id, ACCOUNTS.c.credits, ACCOUNTS.c.daily_budget_usd).where(
        ACCOUNTS.c.id == any_(ids)
    )
    # in id order: two batches locking the same accounts take them in the same order
    return query.order_by(ACCOUNTS.c.id).with_for_update() if lock else query


#: a balance changes only if it is still the one read under the lock
_BY_BALANCE = (("account_id", "id"), ("was", "credits"))


@functools.cache
def _statements() -> tuple[Any, Any]:
    """The two account reads, built at first use (the PostgreSQL dialect's ARRAY)."""
    return _accounts_statement(lock=False), _accounts_statement(lock=True)


def admit_together(c: Connection, admissions: list[PlainAdmission]) -> list[Any]:
    """The admissions of one group commit, set-based; what each would have answered
    alone (``answer(remaining)``), in their order. Raises when one of them cannot be
    admitted: the group commit then runs each alone."""
    read, lock = _statements()
    ids = sorted({a.account_id for a in admissions})
    accounts = {row.id: row for row in c.execute(read, {"ids": ids})}
    watched = [
        i
        for i, row in accounts.items()
        if row.credits is not None or row.daily_budget_usd is not None
    ]
    if watched:
        # locked, and read again under the lock: the balance the debits are taken from
        accounts.update((row.id, row) for row in c.execute(lock, {"ids": watched}))
    budgeted = {i for i, row in accounts.items() if row.daily_budget_usd is not None}
    balances: dict[str, int] = {
        i: int(row.credits)
        for i, row in accounts.items()
        if row.credits is not None and i not in budgeted
    }
    opening = dict(balances)
    results: list[Any] = []
    generations: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    runnable: list[str] = []
    for admission in admissions:
        account_id, row = admission.account_id, admission.row
        if account_id not in accounts or account_id in budgeted:
            # no such account (its own error), or a budget: checked against today's
            # spend, which the account's earlier admissions in this batch are part of
            results.append(admission.alone(c))
            continue
        remaining: int | None = None
        if account_id in balances:
            price = int(row["credits"])
            if balances[account_id] < price:
                raise InsufficientCredits(
                    f"this generation costs {price} credits; the balance is {balances[account_id]}",
                    balance=balances[account_id],
                    price=price,
                )
            remaining = balances[account_id] = balances[account_id] - price
            ledger.append(
                ledger_row(account_id, row["id"], "debit", -price, "generation", row["created_at"])
            )
        generations.append(row)
        events.append(event_row(row["id"], "queued", {}, row["created_at"]))
        if admission.runnable:
            runnable.append(row["id"])
        results.append(admission.answer(remaining))
    changed = [
        {"account_id": i, "was": opening[i], "credits": balances[i]}
        for i in sorted(balances)
        if balances[i] != opening[i]
    ]
    if changed and len(update_rows(c, ACCOUNTS, changed, match=_BY_BALANCE)) != len(changed):
        raise RuntimeError("a locked balance changed under its lock")  # never: run alone
    insert_rows(c, GEN, generations)
    insert_rows(c, EVT, events)
    insert_rows(c, LEDGER, ledger)
    if runnable:
        dispatch(c, runnable)
    return results


@dataclass(eq=False)
class PlainAdmission:
    """One admission with no quota, cache or links: its own transaction function
    (``alone``) and what :func:`admit_together` needs to write it with others."""

    #: the admission's transaction function, run when it runs alone
    alone: TxFunction
    account_id: str
    #: every column of the generation row (:func:`pixelgate.db.admission.new_generation`)
    row: dict[str, Any]
    #: not leased to a worker: the queue engine hears of it
    runnable: bool
    #: what the admission answers, from the balance left after its debit (``None``:
    #: an unmetered account)
    answer: Callable[[int | None], Any]
    #: the group commit runs a batch's plain admissions through it together
    together: Callable[[Connection, list[Any]], list[Any]] = admit_together

    def __call__(self, c: Connection) -> Any:
        return self.alone(c)
