"""2 API processes + 2 worker processes on PostgreSQL, Redis and S3, as real subprocesses.

The cluster uses a redis-server of its own (so the Redis restart test never touches the
shared one) and a database of its own. Tests run in file order; the SIGKILL test is
last because it kills a worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.scaleout.cluster import (
    ADMIN_KEY,
    Cluster,
    cluster_env,
    create_payer,
)
from tests.scaleout.services import PgDatabase, RedisServer, S3Server, fresh_database

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")
SUBMIT_CONCURRENCY = 32


@pytest.fixture(scope="module")
def cluster_db() -> Iterator[PgDatabase]:
    with fresh_database() as db:
        yield db


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    cluster_db: PgDatabase,
    own_redis: RedisServer,
    s3: S3Server,
) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    env = cluster_env(
        workdir,
        database_url=cluster_db.sqlalchemy_url,
        redis_url=own_redis.url,
        s3_env=s3.env("cluster"),
    )
    cl = Cluster(workdir=workdir, env=env)
    cl.migrate()  # the documented start order: schema once, then any number of processes
    for _ in range(2):
        cl.start_api()
        cl.start_worker(concurrency=50)
    try:
        asyncio.run(cl.wait_ready())
        yield cl
    except BaseException:
        for proc in [*cl.apis, *cl.workers]:
            print(f"--- {proc.kind} {proc.log.name}\n{proc.tail()}")
        raise
    finally:
        cl.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def _submit(
    http: httpx.AsyncClient,
    apis: list[str],
    headers: dict[str, str],
    count: int,
    body: dict[str, Any],
) -> list[str]:
    """POST ``count`` jobs, round-robin over the APIs; returns the ids (all answered 202)."""
    gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)

    async def one(i: int) -> str:
        async with gate:
            r = await http.post(
                f"{apis[i % len(apis)]}/v1/generations",
                json={**body, "prompt": f"{body.get('prompt', 'job')} {i}"},
                headers=headers,
            )
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _wait_terminal(db: PgDatabase, ids: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        rows = db.query(
            "SELECT status, count(*) FROM generations WHERE id = ANY(%s) GROUP BY status", ids
        )
        counts = {status: int(n) for status, n in rows}
        if sum(counts.get(s, 0) for s in TERMINAL) == len(ids) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.25)


def _assert_paid_once(db: PgDatabase, ids: list[str]) -> None:
    """Exactly one debit per generation, no refund, balance = sum of the ledger."""
    rows = db.query(
        "SELECT generation_id, kind, count(*) FROM ledger_entries "
        "WHERE generation_id = ANY(%s) GROUP BY generation_id, kind",
        ids,
    )
    debits = {gen: n for gen, kind, n in rows if kind == "debit"}
    others = [(gen, kind, n) for gen, kind, n in rows if kind != "debit"]
    assert others == [], f"unexpected ledger entries: {others[:5]}"
    assert len(debits) == len(ids) and set(debits.values()) == {1}
    [(balance, ledger)] = db.query(
        "SELECT a.credits, (SELECT sum(credits) FROM ledger_entries l WHERE l.account_id = a.id) "
        "FROM accounts a JOIN generations g ON g.account_id = a.id WHERE g.id = %s",
        ids[0],
    )
    assert balance == ledger


def _assert_one_object_per_image(db: PgDatabase, s3: S3Server, ids: list[str]) -> None:
    keys = [k for (k,) in db.query("SELECT key FROM images WHERE generation_id = ANY(%s)", ids)]
    assert len(keys) == len(ids)
    in_bucket = [k.removeprefix("cluster/") for k in s3.keys("cluster/")]
    mine = [k for k in in_bucket if any(gen in k for gen in ids)]
    assert sorted(mine) == sorted(keys), "the bucket holds extra or missing objects"


async def test_200_jobs_round_robin_over_two_apis_all_succeed(
    cluster: Cluster, cluster_db: PgDatabase, s3: S3Server, http: httpx.AsyncClient
) -> None:
    apis = [api.url for api in cluster.apis]
    headers = await create_payer(apis[0], "bulk", credits=1000)
    ids = await _submit(http, apis, headers, 200, {"width": 64, "height": 64})
    # a bound for a loaded CI machine, not a speed test
    counts = await _wait_terminal(cluster_db, ids, timeout=150)
    assert counts == {"SUCCEEDED": 200}, counts
    _assert_paid_once(cluster_db, ids)
    _assert_one_object_per_image(cluster_db, s3, ids)
    # both APIs answer for every job; the image URL is a presigned S3 URL that works
    body = (await http.get(f"{apis[1]}/v1/generations/{ids[0]}", headers=headers)).json()
    image = await http.get(body["images"][0]["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert "immutable" in image.headers["cache-control"]
    # /files on an S3 deployment redirects to the object
    files = await http.get(f"{apis[0]}/files/{body['images'][0]['key']}")
    assert files.status_code == 307 and files.headers["location"].startswith(s3.endpoint)
    stats = (
        await http.get(f"{apis[0]}/admin/storage", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    ).json()
    assert stats["backend"] == "s3" and stats["objects"] >= 200 and stats["bytes"] > 0


def _parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "event" in fields:
            events.append({"event": fields["event"], "id": int(fields["id"]), **fields})
    return events


async def test_sse_on_api_1_follows_a_job_run_by_a_worker(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    api1, api2 = (api.url for api in cluster.apis)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = await http.post(
        f"{api2}/v1/generations", json={"prompt": "sse", "provider": "slow"}, headers=admin
    )
    gen_id = r.json()["id"]
    started = time.monotonic()
    stream = await http.get(f"{api1}/v1/generations/{gen_id}/events", headers=admin, timeout=30)
    elapsed = time.monotonic() - started
    types = [e["event"] for e in _parse_sse(stream.text)]
    assert types[0] == "queued" and types[-1] == "succeeded", types
    assert {"started", "provider_selected"} <= set(types)
    # notification-driven: done well before the SSE fallback poll (15 s) would fire
    assert elapsed < 8, elapsed
    # the seed-000 synchronous route on the other API returns when a worker finishes
    sync = await http.post(
        f"{api1}/generate", json={"prompt": "sync", "provider": "slow"}, headers=admin, timeout=30
    )
    assert sync.status_code == 200, sync.text
    assert sync.json()["success"] is True


async def test_redis_restart_loses_nothing_paid_for(
    cluster: Cluster,
    cluster_db: PgDatabase,
    own_redis: RedisServer,
    s3: S3Server,
    http: httpx.AsyncClient,
) -> None:
    apis = [api.url for api in cluster.apis]
    headers = await create_payer(apis[0], "through-restart", credits=500)
    before = await _submit(http, apis, headers, 20, {"width": 32, "height": 32})
    own_redis.stop()
    deadline = time.monotonic() + 10
    while (health := await http.get(f"{apis[0]}/health")).status_code != 503:
        assert time.monotonic() < deadline, "Redis stopped, yet /health stays healthy"
        await asyncio.sleep(0.05)
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"]["redis"]["status"] == "down"
    assert health.json()["checks"]["queue"]["status"] == "ok"  # the queue is in PostgreSQL
    # admission, dispatch and execution carry on without Redis
    during = await _submit(http, apis, headers, 20, {"width": 32, "height": 32})
    sync = await http.post(
        f"{apis[1]}/v1/generations",
        json={"prompt": "sync while redis is down", "width": 32, "height": 32},
        headers={**headers, "Prefer": "wait=20"},
    )
    assert sync.status_code == 200 and sync.json()["status"] == "SUCCEEDED"
    own_redis.start()
    after = await _submit(http, apis, headers, 20, {"width": 32, "height": 32})
    ids = [*before, *during, sync.json()["id"], *after]
    counts = await _wait_terminal(cluster_db, ids, timeout=60)
    assert counts == {"SUCCEEDED": len(ids)}, counts
    _assert_paid_once(cluster_db, ids)
    _assert_one_object_per_image(cluster_db, s3, ids)
    deadline = time.monotonic() + 10
    while (await http.get(f"{apis[0]}/health")).status_code != 200:
        assert time.monotonic() < deadline, "never healthy again after Redis came back"
        await asyncio.sleep(0.2)


async def test_sigkill_of_a_worker_mid_jobs_loses_nothing(
    cluster: Cluster, cluster_db: PgDatabase, s3: S3Server, http: httpx.AsyncClient
) -> None:
    apis = [api.url for api in cluster.apis]
    headers = await create_payer(apis[0], "survivor", credits=500)
    victim, survivor = cluster.workers[0], cluster.workers[1]
    pid = victim.popen.pid
    # The survivor is frozen while the jobs arrive, so the victim is the one to take them
    # (otherwise, on a loaded machine, the survivor may claim all 40 first).
    survivor.popen.send_signal(signal.SIGSTOP)
    try:
        ids = await _submit(
            http, apis, headers, 40, {"provider": "slow", "width": 32, "height": 32}
        )
        deadline = time.monotonic() + 30
        while True:
            [(held,)] = cluster_db.query(
                "SELECT count(*) FROM generations WHERE status = 'PROCESSING' "
                "AND lease_owner LIKE %s AND id = ANY(%s)",
                f"%:{pid}:%",
                ids,
            )
            if held >= 5:
                break
            assert time.monotonic() < deadline, "the victim never took jobs"
            await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    finally:
        survivor.popen.send_signal(signal.SIGCONT)
    victim.popen.wait(5)
    counts = await _wait_terminal(cluster_db, ids, timeout=60)
    assert counts == {"SUCCEEDED": len(ids)}, counts
    rerun = cluster_db.query(
        "SELECT count(DISTINCT generation_id) FROM events "
        "WHERE type = 'requeued' AND generation_id = ANY(%s)",
        ids,
    )[0][0]
    assert rerun >= held, (rerun, held)  # the victim's jobs ran again elsewhere
    _assert_paid_once(cluster_db, ids)
    _assert_one_object_per_image(cluster_db, s3, ids)
