"""Set-based admissions on PostgreSQL: a group commit's plain admissions share one
INSERT per table (and one balance UPDATE), store what a lone admission stores, never
overdraw a balance, and a job whose row fails still fails alone."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from pixelgate.core.records import AdmitResult
from pixelgate.errors import BudgetExceeded, InsufficientCredits
from pixelgate.runtime import Runtime
from tests.finishes import statements
from tests.scaleout.services import PgDatabase

ADMIN = "pg_setbased_admit_test_admin_key_0"
JOBS = 12


@pytest.fixture
async def rt(pg_runtime: Callable[..., Awaitable[Runtime]]) -> Runtime:
    return await pg_runtime(admin_key=ADMIN, prefix="satest", lease_seconds=30)


def _admit(
    rt: Runtime,
    account_id: str,
    prompt: str,
    *,
    credits: int = 5,
    usd: Decimal | None = Decimal("0.04"),
    **changes: Any,
) -> Awaitable[AdmitResult]:
    request = {"prompt": prompt, "width": 64, "height": 64}
    options: dict[str, Any] = {
        "account_id": account_id,
        "project": "default",
        "prompt": prompt,
        "request": request,
        "request_hash": hashlib.sha256(prompt.encode()).hexdigest(),
        "source": "native",
        "credits": credits,
        "estimated_usd": usd,
        "idempotency_key": None,
        "request_id": f"req-{prompt}",
        "account_name": "who",
    }
    return rt.store.admit(**(options | changes))


def _stored(pg: PgDatabase, gen_id: str) -> dict[str, Any]:
    """What an admission left for one job (not its ids, prompt and times)."""
    [gen] = pg.query(
        "SELECT account_id, project, source, status, progress, request::text, "
        "idempotency_key, provider, route::text, retry_count, error_code, fallback_image, "
        "credits, estimated_usd, cost_usd, lease_owner, lease_expires_at, deliveries, "
        "cancel_requested, batch_id, cache_key, cached_from, started_at, completed_at, "
        "run_after = created_at, updated_at = created_at FROM generations WHERE id = %s",
        gen_id,
    )
    events = pg.query(
        "SELECT type, data::text FROM events WHERE generation_id = %s ORDER BY id", gen_id
    )
    ledger = pg.query(
        "SELECT kind, credits, reason, actor FROM ledger_entries WHERE generation_id = %s",
        gen_id,
    )
    jobs = pg.query(
        "SELECT count(*) FROM procrastinate_jobs WHERE args->'generation_ids' ? %s", gen_id
    )
    return {"generation": gen, "events": events, "ledger": ledger, "jobs": jobs}


def _ledger(pg: PgDatabase, account_id: str) -> tuple[int, int]:
    """The account's debits, and the sum of its whole ledger."""
    [(debits, total)] = pg.query(
        "SELECT count(*) FILTER (WHERE kind = 'debit'), sum(credits) FROM ledger_entries "
        "WHERE account_id = %s",
        account_id,
    )
    return int(debits), int(total)


def _same_prompt(stored: dict[str, Any], prompt: str) -> dict[str, Any]:
    request = f'{{"prompt":"{prompt}","width":64,"height":64}}'
    return {**stored, "generation": (*stored["generation"][:5], request, *stored["generation"][6:])}


async def test_the_admissions_of_one_group_commit_share_their_statements(
    rt: Runtime, pg: PgDatabase
) -> None:
    caller = await rt.local_caller()
    lone = await _admit(rt, caller.account_id, "lone")  # a batch of one: one job's statements
    with statements() as said:
        results = await asyncio.gather(
            *(_admit(rt, caller.account_id, f"p{i}") for i in range(JOBS))
        )
    assert [r.created for r in results] == [True] * JOBS
    assert len({r.generation.id for r in results}) == JOBS
    writes = sorted(s for s in said if s.startswith(("INSERT", "UPDATE", "SELECT ACCOUNTS")))
    assert writes == [
        "INSERT INTO EVENTS",
        "INSERT INTO GENERATIONS",
        "SELECT ACCOUNTS.ID, ACCOUNTS.CREDITS,",  # one read of the batch's accounts
    ], said
    expected = _stored(pg, lone.generation.id)
    assert expected["events"] == [("queued", "{}")] and expected["jobs"] == [(1,)]
    for i, result in enumerate(results):
        assert _stored(pg, result.generation.id) == _same_prompt(expected, f"p{i}")
        assert result.credits_remaining is None
        assert result.generation.status.value == "PENDING"
        assert result.generation.prompt == f"p{i}"


async def test_a_metered_accounts_admissions_share_one_debit_and_stay_exact(
    rt: Runtime, pg: PgDatabase
) -> None:
    account = await rt.store.create_account("metered", credits=100)
    lone = await _admit(rt, account.id, "lone")
    with statements() as said:
        results = await asyncio.gather(*(_admit(rt, account.id, f"m{i}") for i in range(JOBS)))
    writes = sorted(s for s in said if s.startswith(("INSERT", "UPDATE")))
    assert writes == [
        "INSERT INTO EVENTS",
        "INSERT INTO GENERATIONS",
        "INSERT INTO LEDGER_ENTRIES",
        "UPDATE ACCOUNTS SET",
    ], said
    # each saw the balance its own debit left, in the batch's order
    assert sorted(r.credits_remaining or 0 for r in results) == list(range(35, 95, 5))
    [(balance,)] = pg.query("SELECT credits FROM accounts WHERE id = %s", account.id)
    assert balance == 100 - 5 * (JOBS + 1)
    expected = _stored(pg, lone.generation.id)
    assert expected["ledger"] == [("debit", -5, "generation", "system")]
    for i, result in enumerate(results):
        assert _stored(pg, result.generation.id) == _same_prompt(expected, f"m{i}")
    assert _ledger(pg, account.id) == (JOBS + 1, balance)


async def test_concurrent_admissions_never_overdraw_and_the_refused_write_nothing(
    rt: Runtime, pg: PgDatabase
) -> None:
    account = await rt.store.create_account("poor", credits=22)
    results = await asyncio.gather(
        *(_admit(rt, account.id, f"o{i}") for i in range(JOBS)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, AdmitResult)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    assert (len(admitted), len(refused)) == (4, JOBS - 4), results
    assert sorted(r.credits_remaining or 0 for r in admitted) == [2, 7, 12, 17]
    assert pg.query("SELECT credits FROM accounts WHERE id = %s", account.id) == [(2,)]
    # four debits, and the ledger (the opening grant and them) adds up to the balance
    assert _ledger(pg, account.id) == (4, 2)
    assert pg.query("SELECT count(*) FROM generations WHERE account_id = %s", account.id) == [(4,)]
    [(events,)] = pg.query(
        "SELECT count(*) FROM events e JOIN generations g ON g.id = e.generation_id "
        "WHERE g.account_id = %s",
        account.id,
    )
    assert events == 4


async def test_a_job_whose_row_fails_in_a_set_based_admission_fails_alone(
    rt: Runtime, pg: PgDatabase
) -> None:
    """A project name over its column's 64 characters breaks the batch's INSERT: the
    admissions run again alone, and only that one raises."""
    account = await rt.store.create_account("mixed", credits=100)
    results = await asyncio.gather(
        *(
            _admit(rt, account.id, f"f{i}", project="x" * 80 if i == 2 else "default")
            for i in range(5)
        ),
        return_exceptions=True,
    )
    assert isinstance(results[2], DBAPIError), results[2]
    others = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, AdmitResult) and r.created for r in others), others
    assert pg.query("SELECT count(*) FROM generations WHERE prompt = 'f2'") == [(0,)]
    assert pg.query("SELECT credits FROM accounts WHERE id = %s", account.id) == [(80,)]
    assert _ledger(pg, account.id) == (4, 80)


async def test_a_reused_idempotency_key_in_one_batch_replays_the_first(
    rt: Runtime, pg: PgDatabase
) -> None:
    caller = await rt.local_caller()
    results = await asyncio.gather(
        *(_admit(rt, caller.account_id, "same", idempotency_key="k1") for _ in range(3)),
        *(_admit(rt, caller.account_id, f"i{i}") for i in range(3)),
    )
    first = results[0].generation.id
    assert [r.generation.id for r in results[:3]] == [first] * 3
    assert sorted(r.created for r in results[:3]) == [False, False, True]
    assert all(r.created for r in results[3:])
    assert pg.query("SELECT count(*) FROM generations WHERE idempotency_key = 'k1'") == [(1,)]


async def test_an_account_with_a_budget_is_checked_job_by_job(rt: Runtime, pg: PgDatabase) -> None:
    """Today's spend includes the batch's earlier admissions: a budget for three."""
    account = await rt.store.create_account("budgeted", credits=100)
    await rt.store.update_account(account.id, daily_budget_usd=Decimal("0.12"))
    results = await asyncio.gather(
        *(_admit(rt, account.id, f"b{i}") for i in range(6)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, AdmitResult)]
    assert len(admitted) == 3
    assert all(isinstance(r, BudgetExceeded) for r in results if r not in admitted)
    assert pg.query("SELECT credits FROM accounts WHERE id = %s", account.id) == [(85,)]
    assert _ledger(pg, account.id) == (3, 85)


async def test_a_group_commits_dispatch_is_one_statement_of_a_few_jobs(
    rt: Runtime, pg: PgDatabase
) -> None:
    """150 runnable ids: three procrastinate jobs of up to 64 ids, in their order, and
    one statement for them all (each job costs a worker a fetch and a finish)."""
    from pixelgate.queue.engine import ProcrastinateQueue

    ids = [f"gen_{i:03}" for i in range(150)]
    with statements() as said:
        await rt.store.write(lambda c: ProcrastinateQueue.defer_in(c, ids))
    assert len([s for s in said if "DEFER_JOBS" in s]) == 1, said
    jobs = pg.query(
        "SELECT task_name, queue_name, args->'generation_ids' FROM procrastinate_jobs ORDER BY id"
    )
    assert [(task, queue) for task, queue, _ in jobs] == [
        ("pixelgate.run_generation", "generations")
    ] * 3
    assert [chunk for _, _, chunk in jobs] == [ids[:64], ids[64:128], ids[128:]]
