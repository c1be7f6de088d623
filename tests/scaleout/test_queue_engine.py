"""The procrastinate engine on PostgreSQL: transactional enqueue, no-op duplicates,
orphan repair, safe concurrent claims, and the configuration that picks an engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pixelgate.config import load_settings
from pixelgate.core.models import GenerationRequest
from pixelgate.db.engine import Database
from pixelgate.db.store import Store
from pixelgate.errors import ConfigError, InsufficientCredits
from pixelgate.queue.engine import EngineWorker, psycopg_conninfo
from pixelgate.runtime import Runtime
from tests.scaleout.services import PgDatabase

ADMIN = "pg_queue_test_admin_key_0123456789"


@pytest.fixture
async def rt(pg_runtime: Callable[..., Awaitable[Runtime]]) -> Runtime:
    return await pg_runtime(admin_key=ADMIN, prefix="qtest", lease_seconds=5)


def _jobs_for(pg: PgDatabase, gen_id: str) -> list[tuple[Any, ...]]:
    return pg.query(
        "SELECT status::text, task_name, queue_name FROM procrastinate_jobs "
        "WHERE args->>'generation_id' = %s OR args->'generation_ids' ? %s",
        gen_id,
        gen_id,
    )


async def test_admission_enqueues_in_its_own_transaction(rt: Runtime, pg: PgDatabase) -> None:
    assert rt.queue.name == "procrastinate"
    caller = await rt.local_caller()
    result = await rt.pipeline.admit(
        caller, GenerationRequest(prompt="queued", width=32, height=32)
    )
    assert _jobs_for(pg, result.generation.id) == [
        ("todo", "pixelgate.run_generation", "generations")
    ]
    # a rejected admission writes nothing: no row, no debit, no job
    poor = await rt.store.create_account("poor", credits=0)
    from pixelgate.core.pipeline import Caller

    with pytest.raises(InsufficientCredits):
        await rt.pipeline.admit(
            Caller(account_id=poor.id, account_name="poor"), GenerationRequest(prompt="x")
        )
    [(jobs,)] = pg.query("SELECT count(*) FROM procrastinate_jobs")
    assert jobs == 1
    health = await rt.queue.health()
    assert health["queued"] == 1 and health["pending"] == 1


async def test_a_worker_runs_it_and_a_duplicate_delivery_is_a_no_op(
    rt: Runtime, pg: PgDatabase
) -> None:
    worker = await rt.start_worker(concurrency=4)
    assert isinstance(worker, EngineWorker)
    caller = await rt.local_caller()
    result = await rt.pipeline.admit(caller, GenerationRequest(prompt="run", width=32, height=32))
    view = await rt.pipeline.wait(result.generation.id, 20)
    assert view.status.value == "SUCCEEDED"
    assert await worker.deliver(view.id) == "not pending"
    [(deliveries,)] = pg.query("SELECT deliveries FROM generations WHERE id = %s", view.id)
    assert deliveries == 1
    assert _jobs_for(pg, view.id) == []  # finished procrastinate jobs are deleted


async def test_a_pending_row_without_a_job_is_requeued(rt: Runtime, pg: PgDatabase) -> None:
    caller = await rt.local_caller()
    result = await rt.pipeline.admit(caller, GenerationRequest(prompt="lost", width=32, height=32))
    gen_id = result.generation.id
    pg.query("DELETE FROM procrastinate_jobs RETURNING id")  # the delivery is lost
    pg.query(
        "UPDATE generations SET updated_at = now() - interval '1 hour' WHERE id = %s RETURNING id",
        gen_id,
    )
    worker = await rt.start_worker(concurrency=2)
    assert isinstance(worker, EngineWorker)
    await worker._requeue_orphans()
    view = await rt.pipeline.wait(gen_id, 20)
    assert view.status.value == "SUCCEEDED"


async def test_requeue_after_an_expired_lease_enqueues_again(rt: Runtime, pg: PgDatabase) -> None:
    caller = await rt.local_caller()
    result = await rt.pipeline.admit(caller, GenerationRequest(prompt="lease", width=32, height=32))
    gen_id = result.generation.id
    job = await rt.store.claim_id(gen_id, "host:1:dead", lease_s=1)
    assert job is not None
    pg.query("DELETE FROM procrastinate_jobs RETURNING id")
    assert gen_id not in await rt.store.reap()  # the lease still holds
    claimed_at = rt.store.clock()
    rt.store.clock = lambda: claimed_at + timedelta(seconds=2)  # the lease has expired
    assert gen_id in await rt.store.reap()
    assert _jobs_for(pg, gen_id) == [("todo", "pixelgate.run_generation", "generations")]


async def test_concurrent_claims_on_postgres_never_share_a_row(rt: Runtime, pg: PgDatabase) -> None:
    caller = await rt.local_caller()
    ids = [
        (await rt.pipeline.admit(caller, GenerationRequest(prompt=f"c{i}"))).generation.id
        for i in range(60)
    ]
    databases = [Database(pg.sqlalchemy_url, pool_size=2, max_overflow=0) for _ in range(4)]
    try:
        stores = [Store(db) for db in databases]

        async def drain(store: Store, owner: str) -> list[str]:
            got: list[str] = []
            while batch := await store.claim(owner, 30, 7):
                got += [job.id for job in batch]
            return got

        results = await asyncio.gather(*(drain(s, f"w{i}") for i, s in enumerate(stores)))
        # and by id, as the engine delivers: exactly one of four racing claims wins
        again = await asyncio.gather(*(s.claim_id(ids[0], "late", 30) for s in stores))
    finally:
        for db in databases:
            await db.close()
    claimed = [gen for batch in results for gen in batch]
    assert sorted(claimed) == sorted(ids)  # every row once, none twice
    assert again == [None, None, None, None]  # already PROCESSING: a no-op


def test_the_engine_is_chosen_by_configuration(tmp_path: Path) -> None:
    assert load_settings(data_dir=tmp_path).resolved_queue == "embedded"
    pg_url = "postgresql+asyncpg://u:p@db:5432/app?ssl=require"
    assert load_settings(database_url=pg_url).resolved_queue == "procrastinate"
    assert load_settings(database_url=pg_url, queue="embedded").resolved_queue == "embedded"
    with pytest.raises(ConfigError):
        load_settings(data_dir=tmp_path, queue="procrastinate")
    assert psycopg_conninfo(pg_url) == "postgresql://u:p@db:5432/app?sslmode=require"


async def test_admissions_of_one_group_commit_share_one_engine_job(
    rt: Runtime, pg: PgDatabase
) -> None:
    caller = await rt.local_caller()
    admitted = await asyncio.gather(
        *(rt.pipeline.admit(caller, GenerationRequest(prompt=f"g{i}")) for i in range(50))
    )
    ids = {r.generation.id for r in admitted}
    rows = pg.query("SELECT args FROM procrastinate_jobs WHERE status = 'todo'")
    carried = [gen_id for (args,) in rows for gen_id in args["generation_ids"]]
    assert sorted(carried) == sorted(ids)  # each exactly once
    assert len(rows) <= 50 // 16 + 4, len(rows)  # not one job per admission
    # and one delivery claims all it carries in one go
    worker = await rt.start_worker(concurrency=100)
    assert isinstance(worker, EngineWorker)
    views = await asyncio.gather(*(rt.pipeline.wait(gen_id, 30) for gen_id in ids))
    assert {v.status.value for v in views} == {"SUCCEEDED"}
