"""The breaker unit tests again, on :class:`RedisBreakers` against a real Redis.

Every behaviour test of ``tests/unit/test_breaker.py`` that takes the ``make`` fixture
is collected here too, with ``make`` building Redis breakers: the memory and the Redis
implementation provably follow the same state machine.
"""

from __future__ import annotations

import inspect
import random
import secrets
from collections.abc import AsyncIterator

import pytest

from pixelgate.resilience.breaker import Breakers
from pixelgate.resilience.breaker_redis import RedisBreakers
from pixelgate.resilience.storage import open_redis
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
