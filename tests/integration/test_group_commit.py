"""The hot path's database cost: statements and commits per job, and the group commit.

Counted on the embedded deployment (SQLite) with the instant placeholder provider, in
the steady state (caches warm), the way ``docs/benchmarks.md`` reports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event

from pixelgate.db.writer import GroupWriter
from pixelgate.runtime import Runtime

WAIT = {"Prefer": "wait=10"}
#: not statements of the job: the transaction around them (counted as commits)
TRANSACTION_CONTROL = {"BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT"}
JOBS = 20


class _Counter:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.commits = 0

    def on_statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb not in TRANSACTION_CONTROL:
            self.statements.append(verb)

    def on_commit(self, conn: Any) -> None:
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


@pytest.fixture
def sqlite_only(backend: str) -> None:
    if backend != "sqlite":
        pytest.fail(
            "this test measures the embedded (SQLite) deployment; run it without "
            "--backend scaleout",
            pytrace=False,
        )


async def _generate(client: httpx.AsyncClient, i: int) -> None:
    r = await client.post(
        "/v1/generations", json={"prompt": f"p{i}", "width": 64, "height": 64}, headers=WAIT
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "SUCCEEDED"


async def test_a_synchronous_job_costs_at_most_8_statements_and_2_commits(
    sqlite_only: None, client: httpx.AsyncClient
) -> None:
    for i in range(3):  # warm the key, account and configuration caches
        await _generate(client, i)
    with counting() as counter:
        for i in range(JOBS):
            await _generate(client, i)
    per_job = len(counter.statements) / JOBS
    assert per_job <= 8, (per_job, counter.statements[: len(counter.statements) // JOBS + 2])
    # the worker's lease renewal (every lease_s / 3) commits on its own, not per job
    assert counter.commits <= 2 * JOBS + 2, counter.commits


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

    def ok(n: int) -> Any:
        return lambda c: c.execute(text("SELECT :n"), {"n": n}).scalar()

    def broken(c: Any) -> Any:
        c.execute(text("INSERT INTO no_such_table VALUES (1)"))

    results = await asyncio.gather(
        writer.run(ok(1)), writer.run(broken), writer.run(ok(3)), return_exceptions=True
    )
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], Exception) and "no_such_table" in str(results[1])
    assert writer.commits == 1  # all three shared one transaction


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
