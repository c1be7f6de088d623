"""The shared resilience state read cheaply on the hot path, with a bounded staleness.

A worker runs thousands of jobs a second, each reading the pauses twice and the breaker
once and recording one result: reads are reused for a short, documented time (another
process's change is seen here at most that late; this process's own at once) and the
successes of the same moment are recorded by one script call. Each "process" is an
instance with a Redis client of its own; the Redis commands of one are counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from pixelgate.config import BreakerSettings
from pixelgate.resilience.breaker import BreakerState, Outcome
from pixelgate.resilience.breaker_redis import RedisBreakers
from pixelgate.resilience.pauses import RedisPauses

#: the staleness bound where a test waits it out (60 s where a test relies on the cache)
CACHE_S = 0.2


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
    here = RedisPauses(client, prefix=prefix, cache_s=60)
    # jobs planning at once, then each before its call: one read
    await asyncio.gather(*(here.remaining(["p", "q"]) for _ in range(20)))
    for _ in range(20):
        assert await here.remaining(["q", "p"]) == {"q": 0.0, "p": 0.0}
    assert calls == ["MGET"]
    await here.pause("q", 5.0)
    assert 4 < (await here.remaining(["q"]))["q"] <= 5  # its own pause: at once

    soon = RedisPauses(clients(), prefix=prefix, cache_s=CACHE_S)
    assert (await soon.remaining(["p"]))["p"] == 0.0
    await other.pause("p", 30.0)  # another process's pause
    assert (await here.remaining(["p"]))["p"] == 0.0  # not seen within the cache's time
    await asyncio.sleep(CACHE_S)
    assert 28 < (await soon.remaining(["p"]))["p"] <= 30  # seen at most CACHE_S late


async def test_a_closed_breaker_admits_from_memory_and_successes_share_a_call(
    clients: Callable[[], Redis], prefix: str
) -> None:
    settings = BreakerSettings(failure_threshold=2, cooldown_s=30, cooldown_jitter=0)
    other = RedisBreakers(clients(), prefix=prefix, settings=settings)
    client = clients()
    calls = counted(client)
    here = RedisBreakers(client, prefix=prefix, settings=settings, cache_s=60, success_flush_s=60)
    # jobs starting at once, then more: one read of the state
    permits = [p for p, _ in await asyncio.gather(*(here.allow("p") for _ in range(10)))]
    permits += [(await here.allow("p"))[0] for _ in range(10)]
    assert all(p.allowed and p.state == BreakerState.CLOSED for p in permits)
    assert calls == ["HMGET"]
    for permit in permits:  # jobs ending one after another
        assert await here.record("p", permit, Outcome.SUCCESS) == []
    assert await here.record("p", permits[0], Outcome.NEUTRAL) == []  # changes nothing
    assert (await other.snapshots(["p"]))["p"].calls == 0  # waiting to be written
    await here.flush()
    assert calls == ["HMGET", "EVALSHA"]
    assert (await other.snapshots(["p"]))["p"].calls == 20  # every success counted

    soon = RedisBreakers(clients(), prefix=prefix, settings=settings, cache_s=CACHE_S)
    assert (await soon.allow("p"))[0].allowed
    for _ in range(2):  # another process opens it
        permit, _ = await other.allow("p")
        await other.record("p", permit, Outcome.FAILURE, "provider_timeout")
    assert (await here.allow("p"))[0].allowed  # not seen within the cache's time
    await asyncio.sleep(CACHE_S)
    permit, _ = await soon.allow("p")  # seen at most CACHE_S late
    assert not permit.allowed and permit.state == BreakerState.OPEN


async def test_a_failure_recorded_here_is_counted_against_redis_at_once(
    clients: Callable[[], Redis], prefix: str
) -> None:
    settings = BreakerSettings(failure_threshold=2, cooldown_s=30, cooldown_jitter=0)
    other = RedisBreakers(clients(), prefix=prefix, settings=settings)
    here = RedisBreakers(clients(), prefix=prefix, settings=settings, cache_s=60)
    early, _ = await here.allow("p")  # read as closed: admits from memory for a minute
    permit, _ = await other.allow("p")
    await other.record("p", permit, Outcome.FAILURE)
    late, _ = await here.allow("p")
    assert await here.record("p", late, Outcome.SUCCESS) == []  # waits to be written
    [opened] = await here.record("p", late, Outcome.FAILURE)  # the second failure in all
    assert opened.to_state == BreakerState.OPEN
    permit, _ = await here.allow("p")
    assert not permit.allowed  # its own failure dropped what it had read
    assert await here.record("p", early, Outcome.SUCCESS) == []  # an older epoch
    await here.flush()
    # the success waiting here was written before the failure (in its epoch); not the late one
    assert (await other.snapshots(["p"]))["p"].calls == 3
