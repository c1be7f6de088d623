"""The breaker unit tests again, on :class:`RedisBreakers` against a real Redis.

Every behaviour test of ``tests/unit/test_breaker.py`` that takes the ``make`` fixture
is collected here too, with ``make`` building Redis breakers: the memory and the Redis
implementation provably follow the same state machine.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import secrets
from collections.abc import AsyncIterator

import pytest

from pixelgate.resilience.breaker import Breakers, BreakerSnapshot
from pixelgate.resilience.breaker_redis import RedisBreakers
from pixelgate.resilience.counters import open_redis
from tests.unit import test_breaker as unit


@pytest.fixture
async def make(redis_url: str) -> AsyncIterator[unit.Make]:
    client = open_redis(redis_url)
    prefix = f"brk-{secrets.token_hex(4)}"

    def factory(clock: unit.FakeClock, **settings: object) -> Breakers:
        return RedisBreakers(
            client,
            prefix=prefix,
            settings=unit.breaker_settings(**settings),
            clock=clock,
            rng=random.Random(7),
        )

    try:
        yield factory
    finally:
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose(close_connection_pool=True)


PARITY = [
    name
    for name, test in vars(unit).items()
    if name.startswith("test_") and "make" in inspect.signature(test).parameters
]
globals().update({name: getattr(unit, name) for name in PARITY})


def test_every_state_machine_test_runs_here_too() -> None:
    assert len(PARITY) >= 12


async def test_concurrent_snapshot_reads_share_one_round_trip(make: unit.Make) -> None:
    """Jobs planning at the same moment share one Redis read of the breakers, and see
    what it read (a failure recorded before it shows)."""
    from pixelgate.resilience.breaker import Outcome

    breakers = make(unit.FakeClock())
    assert isinstance(breakers, RedisBreakers)
    permit, _ = await breakers.allow("p")
    await breakers.record("p", permit, Outcome.FAILURE, "provider_timeout")
    reads = 0
    read = breakers._read_snapshots

    async def counted(names: list[str]) -> dict[str, BreakerSnapshot]:
        nonlocal reads
        reads += 1
        return await read(names)

    breakers._read_snapshots = counted  # type: ignore[method-assign]
    results = await asyncio.gather(*(breakers.snapshots(["p", "q"]) for _ in range(20)))
    assert reads == 1
    assert all(r["p"].failures == 1 and r["q"].calls == 0 for r in results)
    await breakers.snapshots(["p", "q"])  # the next one after it reads again
    assert reads == 2
