"""The run's route plan checks its candidates' live state (open breakers, paused
providers) without building every snapshot when this process knows all are clear, and
sees a change at once; Redis-backed state is always read (other processes move it)."""

from __future__ import annotations

import random

from pixelgate.resilience.breaker import BreakerState, MemoryBreakers, Outcome
from pixelgate.resilience.breaker_redis import RedisBreakers
from pixelgate.resilience.pauses import MemoryPauses, RedisPauses
from pixelgate.resilience.retry import Clock
from tests.unit.test_breaker import FakeClock, breaker_settings, fail, state


class Ticking(Clock):
    def __init__(self) -> None:
        self.at = 100.0

    def now(self) -> float:
        return self.at


async def test_pauses_are_known_clear_until_one_is_set_and_after_it_ends() -> None:
    clock = Ticking()
    pauses = MemoryPauses(clock)
    assert pauses.known_unpaused(["a", "b"])
    await pauses.pause("a", 5)
    assert not pauses.known_unpaused(["a", "b"]) and pauses.known_unpaused(["b"])
    clock.at += 5.1
    assert pauses.known_unpaused(["a"])
    assert await pauses.remaining(["a"]) == {"a": 0.0}


def test_shared_state_is_never_known_without_a_read() -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url("redis://127.0.0.1:1/0")  # never connected: nothing is read
    assert not RedisPauses(redis, prefix="t").known_unpaused(["a"])
    assert not RedisBreakers.known_closed(object.__new__(RedisBreakers), ["a"])


async def test_memory_breakers_know_closed_until_any_state_change() -> None:
    """Every run's plan asks this first (the snapshots only when it says no): it must be
    no as soon as a breaker leaves closed, through half-open, until it is closed again."""
    clock = FakeClock()
    breakers = MemoryBreakers(
        breaker_settings(half_open_probes=1, cooldown_jitter=0), clock=clock, rng=random.Random(7)
    )
    assert breakers.known_closed(["a", "b"])  # never called
    await fail(breakers)
    await fail(breakers)
    assert breakers.known_closed(["a", "b"])  # failures below the threshold
    await fail(breakers)
    assert not breakers.known_closed(["a", "b"]) and breakers.known_closed(["b"])
    clock.advance(31)
    probe, _ = await breakers.allow("a")  # half-open now
    assert await state(breakers) == BreakerState.HALF_OPEN
    assert not breakers.known_closed(["a"])
    await breakers.record("a", probe, Outcome.SUCCESS)
    assert await state(breakers) == BreakerState.CLOSED and breakers.known_closed(["a"])
    for _ in range(3):
        await fail(breakers)
    assert not breakers.known_closed(["a"])
    await breakers.reset("a")
    assert breakers.known_closed(["a"])
