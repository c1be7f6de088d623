"""The hot path's database cost: statements and commits per job, and the group commit.

Counted on the embedded deployment (SQLite) with the instant placeholder provider, in
the steady state (caches warm), the way ``docs/benchmarks.md`` reports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event

from pixelgate.db.writer import GroupWriter
from pixelgate.runtime import Runtime

WAIT = {"Prefer": "wait=10"}
#: not statements of the job: the transaction around them (counted as commits)
TRANSACTION_CONTROL = {"BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT"}
WRITES = {"INSERT", "UPDATE", "DELETE"}
JOBS = 20


class _Counter:
    """Statements, and commits of transactions that wrote (a read's commit ends a
    snapshot, it writes nothing)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.commits = 0
        self._writing: set[int] = set()

    def on_statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb not in TRANSACTION_CONTROL:
            self.statements.append(verb)
        if verb in WRITES:
            self._writing.add(id(conn))

    def on_commit(self, conn: Any) -> None:
        if id(conn) in self._writing:
            self._writing.discard(id(conn))
            self.commits += 1


@contextmanager
def counting() -> Iterator[_Counter]:
    counter = _Counter()
    event.listen(Engine, "before_cursor_execute", counter.on_statement)
    event.listen(Engine, "commit", counter.on_commit)
    try:
        yield counter
    finally:
        event.remove(Engine, "before_cursor_execute", counter.on_statement)
        event.remove(Engine, "commit", counter.on_commit)


async def _generate(client: httpx.AsyncClient, i: int) -> None:
    r = await client.post(
        "/v1/generations", json={"prompt": f"p{i}", "width": 64, "height": 64}, headers=WAIT
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "SUCCEEDED"


async def test_a_synchronous_job_costs_at_most_8_statements_and_2_commits(
    sqlite_only: None, make_settings: Any
) -> None:
    # timers that write on their own (event flushes of slow jobs, lease renewals) are
    # pushed out of the measured window: on a busy machine they would fire in it
    settings = make_settings(
        providers={"fast": {"kind": "placeholder"}},
        routing={"default": ["fast"]},
        event_flush_interval_s=30,
        lease_seconds=300,
    )
    async with _client(settings) as client:
        for i in range(3):  # warm the key, account and configuration caches
            await _generate(client, i)
        with counting() as counter:
            for i in range(JOBS):
                await _generate(client, i)
    per_job = len(counter.statements) / JOBS
    assert per_job <= 8, (per_job, counter.statements[: len(counter.statements) // JOBS + 2])
    assert counter.commits / JOBS <= 2, counter.commits


@asynccontextmanager
async def _client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    from pixelgate.api.app import create_app
    from tests.conftest import ADMIN_KEY

    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    try:
        app = create_app(settings, runtime=runtime, run_worker=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as client:
            yield client
    finally:
        await runtime.close()


async def test_concurrent_jobs_share_commits(sqlite_only: None, client: httpx.AsyncClient) -> None:
    await _generate(client, 0)
    with counting() as counter:
        await asyncio.gather(*(_generate(client, i) for i in range(50)))
    # 50 admissions and 50 finishes, alone they would be 100 commits
    assert counter.commits < 50, counter.commits


async def test_a_failing_function_in_a_batch_fails_alone(runtime: Runtime) -> None:
    """A statement that fails in a group commit fails only its own caller."""
    from sqlalchemy import text

    writer = GroupWriter(runtime.db)  # its own: the worker's lease renewals write too
    await writer.run(lambda c: c.execute(text("CREATE TABLE gc_probe (n INTEGER)")))
    insert = text("INSERT INTO gc_probe VALUES (:n)")

    def ok(n: int) -> Any:
        def write(c: Any) -> Any:
            c.execute(insert, {"n": n})
            return n

        return write

    def broken(c: Any) -> Any:
        c.execute(insert, {"n": 2})  # written, then undone with its savepoint
        c.execute(text("INSERT INTO no_such_table VALUES (1)"))

    results = await asyncio.gather(
        writer.run(ok(1)), writer.run(broken), writer.run(ok(3)), return_exceptions=True
    )
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], Exception) and "no_such_table" in str(results[1])
    assert writer.commits == 2  # the table, then all three in one transaction
    rows = await runtime.db.run(lambda c: c.execute(text("SELECT n FROM gc_probe")).scalars().all())
    assert sorted(rows) == [1, 3]


async def test_a_rejected_admission_in_a_batch_leaves_its_neighbours_admitted(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    """Admissions of a poor and a rich account in one group commit: the 402 writes
    nothing, the others are admitted and charged once."""
    _, poor = await make_account("poor", credits=0)
    rich_caller, rich = await make_account("rich", credits=10)
    body = {"prompt": "x", "width": 64, "height": 64}
    answers = await asyncio.gather(
        client.post("/v1/generations", json=body, headers=rich),
        client.post("/v1/generations", json=body, headers=poor),
        client.post("/v1/generations", json=body, headers=rich),
    )
    assert [a.status_code for a in answers] == [202, 402, 202]
    assert answers[1].json()["error"]["code"] == "insufficient_credits"
    account = await runtime.store.get_account(rich_caller.account_id)
    assert account.credits == 10 - 2 * _price(answers[0].json())
    assert await runtime.store.ledger_sum(rich_caller.account_id) == account.credits
    poor_list = await client.get("/v1/generations", headers=poor)
    assert poor_list.json()["data"] == []


def _price(body: dict[str, Any]) -> int:
    return int(body["cost"]["credits"])


async def test_only_the_lease_owner_ends_a_handed_over_pending_job(
    settings: Any, make_account: Any
) -> None:
    """A job admitted leased to a worker stays PENDING until it starts; a finish by
    anyone else (another worker, an ownerless failure) changes nothing."""
    rt = await Runtime.open(settings)  # no worker: the test plays the workers
    try:
        account = await rt.store.create_account("leased", tier="PRO")
        common: dict[str, Any] = {
            "account_id": account.id, "project": "p", "prompt": "x", "request": {},
            "request_hash": "h", "source": "native", "credits": 0, "estimated_usd": None,
            "idempotency_key": None, "request_id": None, "account_name": account.name,
        }
        leased = await rt.store.admit(**common, lease_to="w1", lease_s=30)
        unleased = await rt.store.admit(**common)
        assert leased.job is not None and leased.job.handed_over
        assert leased.generation.status.value == "PENDING" and unleased.job is None
        # nobody else claims it while the lease lives; the unleased one is claimable
        assert [j.id for j in await rt.store.claim("w2", 30, 10)] == [unleased.generation.id]
        finish: dict[str, Any] = {
            "provider": "fast", "model": "m", "images": [], "cost_usd": None,
            "provider_ms": 1, "route": [], "account_id": account.id,
        }
        gen_id = leased.generation.id
        assert await rt.store.finish_succeeded(gen_id, "w2", **finish) is None
        assert await rt.store.finish_failed(
            gen_id, None, code="x", message="y", route=[], account_id=account.id
        ) is None
        assert (await rt.store.get_generation(gen_id)).status.value == "PENDING"
        done = await rt.store.finish_succeeded(gen_id, "w1", **finish)
        assert done is not None and done.status.value == "SUCCEEDED"
        assert done.started_at is not None
    finally:
        await rt.close()


async def test_a_cancelled_in_memory_wait_is_cancelled_and_the_job_carries_on(
    runtime: Runtime, backend: str
) -> None:
    """A waiter on a job this process runs gets the final view from memory; cancelling
    the waiter (a client gone) cancels only the waiter."""
    from pixelgate.core.models import GenerationRequest

    if backend != "sqlite":
        pytest.skip("the in-memory hand-over is the embedded worker's; scale-out workers "
                    "take jobs from the queue engine (tests/scaleout/test_queue_engine.py)")

    caller = await runtime.local_caller()
    admitted = await runtime.pipeline.admit(
        caller, GenerationRequest(prompt="slow", provider="slow", width=32, height=32)
    )
    assert admitted.job is not None  # handed over in memory
    waiter = asyncio.create_task(runtime.pipeline.wait(admitted.generation.id, 10))
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    view = await runtime.pipeline.wait(admitted.generation.id, 10)
    assert view.status.value == "SUCCEEDED"


async def test_a_commit_that_fails_fails_its_batch_and_the_next_one_commits(
    tmp_path: Any,
) -> None:
    """SQLite's write connection stays checked out between batches: a COMMIT refused
    (a deferred foreign key) fails that batch's callers, writes none of it, and leaves
    the connection fit for the next batch."""
    from sqlalchemy import text

    from pixelgate.db.engine import Database

    db = Database(f"sqlite:///{tmp_path / 'held.db'}")
    try:
        writer = GroupWriter(db)
        await writer.run(lambda c: c.execute(text("CREATE TABLE p (id INTEGER PRIMARY KEY)")))
        await writer.run(
            lambda c: c.execute(text("CREATE TABLE k (p INTEGER REFERENCES p (id))"))
        )

        def orphan(c: Any) -> None:
            c.execute(text("PRAGMA defer_foreign_keys = ON"))  # checked at COMMIT
            c.execute(text("INSERT INTO k VALUES (7)"))

        def ok(n: int) -> Any:
            return lambda c: c.execute(text("INSERT INTO p VALUES (:n)"), {"n": n})

        failed = await asyncio.gather(writer.run(orphan), writer.run(ok(1)), return_exceptions=True)
        assert all(isinstance(r, Exception) for r in failed), failed
        assert "FOREIGN KEY" in str(failed[0])
        await writer.run(ok(2))
        await writer.run(ok(3))
        count = "SELECT (SELECT count(*) FROM k), (SELECT group_concat(id) FROM p)"
        assert await db.run(lambda c: tuple(c.execute(text(count)).one())) == (0, "2,3")
    finally:
        await db.close()


async def test_a_batch_where_nothing_fails_takes_no_savepoint(tmp_path: Any) -> None:
    """On SQLite the usual batch runs under no savepoint (its statement journal would
    copy every page the batch changes, spilling to a temporary file); a function that
    fails still fails alone: the transaction begins again and each function runs in its
    own savepoint (``test_a_failing_function_in_a_batch_fails_alone``)."""
    from sqlalchemy import text

    from pixelgate.db.engine import Database

    db = Database(f"sqlite:///{tmp_path / 'savepoints.db'}")
    try:
        writer = GroupWriter(db)
        said: list[str] = []
        await writer.run(lambda c: c.connection.driver_connection.set_trace_callback(said.append))
        await writer.run(lambda c: c.execute(text("CREATE TABLE t (n INTEGER)")))
        said.clear()
        commits = writer.commits
        values = await asyncio.gather(
            *(writer.run(lambda c, n=n: c.execute(text(f"INSERT INTO t VALUES ({n})")) and n)
              for n in range(5))
        )
        assert values == list(range(5)) and writer.commits == commits + 1
        assert [s for s in said if s.startswith(("SAVEPOINT", "ROLLBACK", "BEGIN"))] == [
            "BEGIN IMMEDIATE"
        ]
        assert await db.run(lambda c: c.execute(text("SELECT count(*) FROM t")).scalar()) == 5
        said.clear()

        def broken(c: Any) -> None:
            c.execute(text("INSERT INTO t VALUES (-1)"))
            c.execute(text("INSERT INTO no_such_table VALUES (1)"))

        results = await asyncio.gather(
            writer.run(lambda c: c.execute(text("INSERT INTO t VALUES (7)")) and 7),
            writer.run(broken),
            return_exceptions=True,
        )
        assert results[0] == 7 and "no_such_table" in str(results[1])
        assert [s for s in said if s.startswith(("ROLLBACK", "BEGIN"))] == [
            "BEGIN IMMEDIATE",
            "ROLLBACK",
            "BEGIN IMMEDIATE",
            "ROLLBACK TO pixelgate_item",
        ]
        rows = "SELECT group_concat(n) FROM (SELECT n FROM t ORDER BY n)"
        assert await db.run(lambda c: c.execute(text(rows)).scalar()) == "0,1,2,3,4,7"
    finally:
        await db.close()


async def test_functions_with_a_set_based_form_run_together_and_fail_alone(
    tmp_path: Any,
) -> None:
    """Functions carrying ``together`` run through it, once per batch and after the
    others; when it raises, every function of the batch runs alone in its savepoint."""
    from sqlalchemy import text

    from pixelgate.db.engine import Database

    db = Database(f"sqlite:///{tmp_path / 'together.db'}")
    order: list[str] = []

    class Item:
        def __init__(self, n: int) -> None:
            self.n = n

        def __call__(self, c: Any) -> Any:
            if self.n < 0:
                raise ValueError(f"item {self.n}")
            order.append(f"alone {self.n}")
            return self.n

        @staticmethod
        def together(c: Any, items: list[Any]) -> list[Any]:
            order.append(f"together {[i.n for i in items]}")
            if any(i.n < 0 for i in items):
                raise ValueError("one of them")
            return [i.n * 10 for i in items]

    def plain(c: Any) -> str:
        order.append("plain")
        return "p"

    try:
        writer = GroupWriter(db)
        await writer.run(lambda c: c.execute(text("SELECT 1")))
        results = await asyncio.gather(writer.run(Item(1)), writer.run(plain), writer.run(Item(2)))
        assert results == [10, "p", 20]
        assert order == ["plain", "together [1, 2]"]
        order.clear()
        results = await asyncio.gather(
            writer.run(Item(1)),
            writer.run(Item(-1)),
            writer.run(Item(3)),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 3 and "item -1" in str(results[1])
        assert order == ["together [1, -1, 3]", "alone 1", "alone 3"]
    finally:
        await db.close()
