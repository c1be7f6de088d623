"""The resilience state a process shares with the other processes of its deployment.

:func:`open_shared_state` is the one place that chooses, by
:func:`~pixelgate.resilience.counters.shared_state_backend`:

==================  ===========================  ===============================
                    memory (embedded)            Redis (``PIXELGATE_REDIS_URL``)
==================  ===========================  ===============================
circuit breakers    ``MemoryBreakers``           ``RedisBreakers`` (wall clock)
concurrency gates   ``MemoryGates``              ``RedisGates`` (leases)
rate windows        ``limits`` memory storage    ``limits`` Redis storage
                    (made at first use)
Retry-After pauses  ``MemoryPauses``             ``RedisPauses``
==================  ===========================  ===============================

The inbound request limits (``inbound.py``) use the same ``limits`` storage (in memory,
each its own, made at its first use: `limits` is not imported by a start). With Redis
every piece runs on the process's one client and fails open through one shared
:class:`~pixelgate.resilience.outage.Outage` while Redis is unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pixelgate.config import Settings
from pixelgate.resilience.breaker import Breakers, MemoryBreakers
from pixelgate.resilience.counters import open_limits_storage, open_redis, shared_state_backend
from pixelgate.resilience.pauses import MemoryPauses, Pauses
from pixelgate.resilience.ratelimit import Gates, MemoryGates, RateWindows
from pixelgate.resilience.retry import Clock

if TYPE_CHECKING:
    from limits.aio.storage import Storage
    from redis.asyncio import Redis

    from pixelgate.resilience.outage import Outage

__all__ = ["SharedState", "open_shared_state"]


@dataclass
class SharedState:
    """Breakers, concurrency gates, rate windows and provider pauses of one process."""

    backend: str
    #: monotonic time and sleep of the routing code (tests replace both)
    clock: Clock
    breakers: Breakers
    gates: Gates
    windows: RateWindows
    pauses: Pauses
    #: the ``limits`` storage of the rate windows and the inbound request limits (``None``:
    #: each makes a memory storage at its first use)
    limits: Storage | None
    #: a client opened here for want of one (closed with the state)
    owned_redis: Redis | None = None
    #: how calls to Redis fail open while it is unreachable (``None``: memory)
    guard: Outage | None = None

    async def close(self) -> None:
        """Stop background work and give back what this process holds."""
        flush = getattr(self.breakers, "flush", None)  # successes waiting to be recorded
        if flush is not None:
            await flush()
        await self.gates.close()
        if self.owned_redis is not None:
            await self.owned_redis.aclose(close_connection_pool=True)


def open_shared_state(
    settings: Settings, *, redis: Redis | None = None, clock: Clock | None = None
) -> SharedState:
    """Memory state, or Redis state on ``redis`` (the process's client; one is opened if
    not given) when ``settings.redis_url`` is set."""
    clock = clock or Clock()
    if shared_state_backend(settings) == "memory":
        return SharedState(
            backend="memory",
            clock=clock,
            breakers=MemoryBreakers(settings.routing.breaker, clock=lambda: clock.now()),
            gates=MemoryGates(),
            windows=RateWindows(),
            pauses=MemoryPauses(clock),
            limits=None,
        )
    from limits.errors import StorageError
    from redis.exceptions import RedisError

    from pixelgate.resilience.breaker_redis import RedisBreakers
    from pixelgate.resilience.gates_redis import RedisGates
    from pixelgate.resilience.outage import Outage
    from pixelgate.resilience.pauses import RedisPauses

    owned = None
    if redis is None:
        redis = owned = open_redis(str(settings.redis_url))
    prefix = settings.redis_prefix
    guard = Outage((RedisError, StorageError))
    storage = open_limits_storage(settings, redis=redis)
    return SharedState(
        backend="redis",
        clock=clock,
        breakers=RedisBreakers(
            redis, prefix=prefix, settings=settings.routing.breaker, guard=guard
        ),
        gates=RedisGates(redis, prefix=prefix, guard=guard),
        windows=RateWindows(storage, guard=guard),
        pauses=RedisPauses(redis, prefix=prefix, guard=guard),
        limits=storage,
        owned_redis=owned,
        guard=guard,
    )
