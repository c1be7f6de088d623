"""Rate windows over the `limits` library, and concurrency gates.

Requests per minute (or any `limits` rate) use ``limits.aio``'s moving window: exact
and bounded by the limit. Memory storage in one process; the same class takes the
deployment's Redis ``limits`` storage to share windows across processes (and then an
:class:`~pixelgate.resilience.outage.Outage` guard: an unreachable Redis grants). In one
process `limits` is imported at the first rate-limited call (~1 MB resident, ~20 ms):
most deployments set no outbound rate.
Concurrency caps are not in `limits`: :class:`Gates` is their interface,
:class:`MemoryGates` a FIFO counter per key whose limit can change while jobs wait (hot
configuration), ``RedisGates`` (``gates_redis.py``) leases in Redis shared by every process.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from pixelgate.resilience.outage import Outage

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.storage import Storage
    from limits.aio.strategies import MovingWindowRateLimiter

__all__ = ["Gates", "MemoryGates", "RateWindows", "moving_window"]

NAMESPACE = "pixelgate:outbound"
#: never spin: wait at least this long before testing a full window again
MIN_WAIT_S = 0.01


class RateWindows:
    """Moving-window rate limits keyed by strings.

    Without a ``storage``, a memory storage of this process, made at the first call.
    """

    def __init__(self, storage: Storage | None = None, *, guard: Outage | None = None) -> None:
        self._storage = storage
        self._made: MovingWindowRateLimiter | None = None
        self._items: dict[str, RateLimitItem] = {}
        self._guard = guard

    @property
    def _limiter(self) -> MovingWindowRateLimiter:
        if self._made is None:
            self._made = moving_window(self._storage)
        return self._made

    def _item(self, rate: str) -> RateLimitItem:
        item = self._items.get(rate)
        if item is None:
            from limits import parse

            item = self._items[rate] = parse(rate)
            item.namespace = NAMESPACE
        return item

    async def acquire(self, rate: str, *key: str) -> float:
        """Take one request from the window: 0.0 when granted, else seconds until a slot."""
        if self._guard is not None:
            return await self._guard.run("rate window", lambda: self._acquire(rate, key), 0.0)
        return await self._acquire(rate, key)

    async def _acquire(self, rate: str, key: tuple[str, ...]) -> float:
        item = self._item(rate)
        if await self._limiter.hit(item, *key):
            return 0.0
        stats = await self._limiter.get_window_stats(item, *key)
        return max(MIN_WAIT_S, stats.reset_time - time.time())

    async def remaining(self, rate: str, *key: str) -> int:
        stats = await self._limiter.get_window_stats(self._item(rate), *key)
        return int(stats.remaining)


def moving_window(storage: Storage | None) -> MovingWindowRateLimiter:
    """``limits``' moving-window limiter on ``storage`` (``None``: a new memory storage)."""
    from limits.aio.storage import MemoryStorage
    from limits.aio.strategies import MovingWindowRateLimiter

    return MovingWindowRateLimiter(storage or MemoryStorage())


class Gates(Protocol):
    """Concurrency caps: at most ``limit`` holders per key at once, first come first served.

    The newest ``limit`` passed for a key applies to everyone waiting on it (a raised
    limit lets waiters in). A holder's slots are fungible: ``release`` gives back one.
    """

    async def try_acquire(self, key: str, limit: int) -> bool:
        """Take a slot if one is free and nobody waits ahead; never waits."""

    async def acquire(self, key: str, limit: int) -> None:
        """Wait for a slot; cancelled while waiting, nothing is held."""

    async def release(self, key: str) -> None: ...

    async def usage(self, key: str) -> tuple[int, int]:
        """``(in_flight, waiting)``."""

    async def close(self) -> None:
        """Stop background work; Redis gates also give back the slots this process holds."""


class _Gate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def wake(self) -> None:
        while self.waiters and self.active < self.limit:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.active += 1  # handed over: the waiter owns the slot
                waiter.set_result(None)


class MemoryGates:
    """Concurrency gates in process memory; no method awaits, so each is atomic."""

    def __init__(self) -> None:
        self._gates: dict[str, _Gate] = {}

    def _gate(self, key: str, limit: int) -> _Gate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(limit)
        elif gate.limit != limit:
            gate.limit = limit  # hot configuration: a raised limit lets waiters in now
            gate.wake()
        return gate

    async def try_acquire(self, key: str, limit: int) -> bool:
        return self._try_acquire(key, limit)

    def _try_acquire(self, key: str, limit: int) -> bool:
        gate = self._gate(key, limit)
        if gate.waiters or gate.active >= gate.limit:
            return False
        gate.active += 1
        return True

    async def acquire(self, key: str, limit: int) -> None:
        if self._try_acquire(key, limit):
            return
        gate = self._gates[key]
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(key)  # the slot was handed over as we were cancelled
            else:
                try:
                    gate.waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    async def release(self, key: str) -> None:
        self._release(key)

    def _release(self, key: str) -> None:
        gate = self._gates.get(key)
        if gate is None:
            return
        gate.active = max(0, gate.active - 1)
        gate.wake()

    async def usage(self, key: str) -> tuple[int, int]:
        gate = self._gates.get(key)
        if gate is None:
            return 0, 0
        return gate.active, sum(1 for w in gate.waiters if not w.done())

    async def close(self) -> None:
        """Nothing runs in the background here."""
