"""The run's route plan checks its candidates' live state (open breakers, paused
providers) without building every snapshot when this process knows all are clear, and
sees a change at once; Redis-backed state is always read (other processes move it)."""

from __future__ import annotations

from pixelgate.resilience.breaker_redis import RedisBreakers
from pixelgate.resilience.pauses import MemoryPauses, RedisPauses
from pixelgate.resilience.retry import Clock


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
