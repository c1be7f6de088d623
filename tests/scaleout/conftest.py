"""Fixtures of the scale-out tests: real PostgreSQL, Redis and S3 (moto) on loopback.

PostgreSQL and Redis are required: an unreachable server fails these tests, it never
skips them. Each session works in its own database ``pixelgate_test_<random>``, dropped
at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pixelgate.config import load_settings
from pixelgate.resilience.counters import open_redis
from pixelgate.runtime import Runtime
from tests.scaleout.services import (
    REDIS_URL,
    PgDatabase,
    S3Server,
    fresh_database,
    moto_s3,
    require_redis,
)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgDatabase]:
    with fresh_database() as db:
        yield db


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with moto_s3() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_redis()
    return REDIS_URL


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[Callable[[], Redis]]:
    """A fresh Redis client per "process" of a test, closed after it."""
    opened: list[Redis] = []

    def factory() -> Redis:
        opened.append(open_redis(redis_url))
        return opened[-1]

    yield factory
    for client in opened:
        await client.aclose(close_connection_pool=True)


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of the test's own; its keys are deleted after it."""
    name = f"t-{secrets.token_hex(4)}"
    yield name
    client = open_redis(redis_url)
    keys = [key async for key in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose(close_connection_pool=True)


@pytest.fixture
async def pg_runtime(
    pg: PgDatabase, redis_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Runtime]]]:
    """Open a runtime on a wiped test database (no worker: the test plays it), with a
    placeholder ``fast`` provider; closed after the test."""
    opened: list[Runtime] = []

    async def factory(*, admin_key: str, prefix: str, lease_seconds: float) -> Runtime:
        pg.wipe()
        settings = load_settings(
            data_dir=tmp_path,
            database_url=pg.sqlalchemy_url,
            redis_url=redis_url,
            redis_prefix=f"{prefix}-{tmp_path.name[-6:]}",
            admin_key=admin_key,
            lease_seconds=lease_seconds,
            providers={"fast": {"kind": "placeholder"}},
            routing={"default": ["fast"]},
        )
        opened.append(await Runtime.open(settings))
        return opened[-1]

    yield factory
    for runtime in opened:
        await runtime.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The scale-out tests share the machine's PostgreSQL (100 connections) and start
    # clusters of processes: under pytest-xdist they all run on one worker, in order.
    for item in items:
        if "tests/scaleout/" in str(item.fspath):
            item.add_marker(pytest.mark.xdist_group("scaleout"))
