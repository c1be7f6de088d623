"""The shared resilience state read cheaply on the hot path, with a bounded staleness.

A worker runs thousands of jobs a second, each reading the pauses twice: reads are reused
for a short, documented time (another process's change is seen here at most that late;
this process's own at once). Each "process" is an
instance with a Redis client of its own; the Redis commands of one are counted.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from pixelgate.resilience.counters import open_redis
from pixelgate.resilience.pauses import RedisPauses

#: the staleness the tests allow (long enough that a busy machine does not outlast it)
CACHE_S = 0.5


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[Callable[[], Redis]]:
    opened: list[Redis] = []

    def factory() -> Redis:
        opened.append(open_redis(redis_url))
        return opened[-1]

    yield factory
    for client in opened:
        await client.aclose(close_connection_pool=True)


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    name = f"reads-{secrets.token_hex(4)}"
    yield name
    client = open_redis(redis_url)
    keys = [key async for key in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose(close_connection_pool=True)


def counted(client: Redis) -> list[str]:
    """The names of the commands ``client`` answers from now on (pipelines aside)."""
    calls: list[str] = []
    original = client.execute_command

    async def execute_command(*args: Any, **options: Any) -> Any:
        result = await original(*args, **options)
        calls.append(str(args[0]).upper())
        return result

    client.execute_command = execute_command  # type: ignore[method-assign]
    return calls


async def test_pause_reads_are_shared_and_another_process_s_pause_is_seen_soon(
    clients: Callable[[], Redis], prefix: str
) -> None:
    other = RedisPauses(clients(), prefix=prefix)
    client = clients()
    calls = counted(client)
    here = RedisPauses(client, prefix=prefix, cache_s=CACHE_S)
    # jobs planning at once, then each before its call: one read
    await asyncio.gather(*(here.remaining(["p", "q"]) for _ in range(20)))
    for _ in range(20):
        assert await here.remaining(["q", "p"]) == {"q": 0.0, "p": 0.0}
    assert calls.count("MGET") == 1

    await other.pause("p", 30.0)
    await asyncio.sleep(CACHE_S)
    assert 28 < (await here.remaining(["p"]))["p"] <= 30  # seen at most CACHE_S late
    await here.pause("q", 5.0)
    assert 4 < (await here.remaining(["q"]))["q"] <= 5  # its own pause: at once
    assert 28 < (await here.remaining(["p"]))["p"] <= 30
