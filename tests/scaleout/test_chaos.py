"""The SIGKILL audit on the scale-out deployment: an API process and a worker process
killed in turn at random moments while admissions flow (they share group commits and
procrastinate jobs), restarted, then every accepted job terminal and the ledger exact.

CI runs it small; ``scripts/chaos-scaleout`` runs it larger (``PIXELGATE_CHAOS_ROUNDS``,
``PIXELGATE_CHAOS_JOBS``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.scaleout.cluster import Cluster, Proc, cluster_env, create_payer
from tests.scaleout.services import PgDatabase, RedisServer, S3Server, fresh_database

ROUNDS = int(os.environ.get("PIXELGATE_CHAOS_ROUNDS", "2"))
JOBS = int(os.environ.get("PIXELGATE_CHAOS_JOBS", "40"))
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")


@pytest.fixture(scope="module")
def chaos_db() -> Iterator[PgDatabase]:
    with fresh_database() as db:
        yield db


@pytest.fixture(scope="module")
def chaos_cluster(
    tmp_path_factory: pytest.TempPathFactory, chaos_db: PgDatabase, s3: S3Server
) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("chaos")
    redis = RedisServer(tmp_path_factory.mktemp("chaos-redis"))
    redis.start()
    env = cluster_env(
        workdir, database_url=chaos_db.sqlalchemy_url, redis_url=redis.url,
        s3_env=s3.env("chaos"),
    )
    cluster = Cluster(workdir=workdir, env=env)
    cluster.migrate()
    cluster.start_api()
    cluster.start_worker(concurrency=200)
    try:
        asyncio.run(cluster.wait_ready())
        yield cluster
    except BaseException:
        for proc in [*cluster.apis, *cluster.workers]:
            print(f"--- {proc.kind} {proc.log.name}\n{proc.tail()}")
        raise
    finally:
        cluster.stop()
        redis.stop()


def _kill(cluster: Cluster, proc: Proc) -> None:
    proc.popen.send_signal(signal.SIGKILL)
    assert proc.popen.wait(10) == -signal.SIGKILL
    (cluster.apis if proc.kind == "api" else cluster.workers).remove(proc)


async def test_sigkill_of_api_and_worker_under_load_keeps_the_ledger_exact(
    chaos_cluster: Cluster, chaos_db: PgDatabase
) -> None:
    cluster = chaos_cluster
    rng = random.Random(20261205)
    headers = await create_payer(cluster.apis[0].url, "chaos", credits=1_000_000)
    acked: list[str] = []
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        for round_ in range(ROUNDS):
            url = cluster.apis[0].url

            async def submit(i: int, url: str = url, round_: int = round_) -> None:
                provider = "nope" if i % 4 == 0 else "fast"  # a quarter fail: refunds
                body = {"prompt": f"chaos {round_}/{i}", "provider": provider,
                        "width": 32, "height": 32}
                try:
                    r = await http.post(f"{url}/v1/generations", json=body)
                except httpx.HTTPError:
                    return  # the API died under it: not acknowledged
                assert r.status_code == 202, r.text
                acked.append(r.json()["id"])

            flood = asyncio.gather(*(submit(i) for i in range(JOBS)))
            await asyncio.sleep(rng.uniform(0.05, 0.8))
            victim = cluster.apis[0] if round_ % 2 == 0 else cluster.workers[0]
            _kill(cluster, victim)
            await flood
            if victim.kind == "api":
                cluster.start_api()
            else:
                cluster.start_worker(concurrency=200)
            await cluster.wait_ready()

        assert acked, "nothing was acknowledged before the kills"
        await _all_terminal(chaos_db, timeout=120)

    rows = chaos_db.query(
        "SELECT g.id, g.status FROM generations g JOIN accounts a ON a.id = g.account_id "
        "WHERE a.name = 'chaos'"
    )
    status = dict(rows)
    assert set(acked) <= set(status), "an acknowledged job was lost"
    assert set(status.values()) <= {"SUCCEEDED", "FAILED"}, Counter(status.values())
    entries = chaos_db.query(
        "SELECT l.generation_id, l.kind FROM ledger_entries l JOIN accounts a "
        "ON a.id = l.account_id WHERE a.name = 'chaos' AND l.generation_id IS NOT NULL"
    )
    per = Counter(entries)
    for gen_id, state in status.items():
        assert per[(gen_id, "debit")] == 1, (gen_id, state)
        assert per[(gen_id, "refund")] == (1 if state == "FAILED" else 0), (gen_id, state)
    [(balance, total)] = chaos_db.query(
        "SELECT a.credits, (SELECT sum(credits) FROM ledger_entries l "
        "WHERE l.account_id = a.id) FROM accounts a WHERE a.name = 'chaos'"
    )
    assert balance == total
    print(  # scripts/chaos-scaleout shows it (-rP)
        f"chaos: {ROUNDS} SIGKILLs, {len(acked)} acknowledged, {len(status)} admitted, "
        f"{dict(Counter(status.values()))}, balance {balance} = ledger"
    )


async def _all_terminal(db: PgDatabase, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        [(open_jobs,)] = db.query(
            "SELECT count(*) FROM generations WHERE status NOT IN ('SUCCEEDED', 'FAILED', "
            "'CANCELED')"
        )
        if open_jobs == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{open_jobs} jobs never ended"
        await asyncio.sleep(0.25)
