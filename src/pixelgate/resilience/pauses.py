"""Provider pauses: a 429's ``Retry-After`` holds every call to that provider until then.

A pause is only ever extended (a shorter ``Retry-After`` never shortens a longer one) and
ends by itself. :class:`MemoryPauses` keeps them in this process; :class:`RedisPauses`
keeps one key per provider, ``{prefix}:pause:{provider}``, holding the pause-until time
and expiring with it, so a 429 seen by one process pauses the provider for all of them.

A run reads the pauses twice (when it plans its route, and before each call), thousands
of jobs a second: :class:`RedisPauses` reuses what it read for :data:`CACHE_S`, and the
reads of jobs asking at the same moment share one round trip. So a pause set by another
process is seen here at most :data:`CACHE_S` late (a ``Retry-After`` is seconds long); a
pause set by this process is seen here at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from pixelgate.resilience.outage import Outage
from pixelgate.resilience.retry import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["MemoryPauses", "Pauses", "RedisPauses"]

#: the pause-until time, set only when later than the one stored; the key expires with it
_EXTEND = """
local current = tonumber(redis.call('GET', KEYS[1]))
if current == nil or tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
#: a key outlives its pause by this much (a process with a slightly late clock still sees it)
_GRACE_MS = 1000
#: how long a read of a provider's pause is reused (the staleness bound of other processes')
CACHE_S = 0.1


class Pauses(Protocol):
    """Pause-until times per provider."""

    async def pause(self, provider: str, seconds: float) -> None:
        """Hold calls to ``provider`` for ``seconds`` from now (never shortens a pause)."""

    async def remaining(self, providers: Iterable[str]) -> dict[str, float]:
        """Seconds left of each provider's pause (0.0 when not paused)."""

    def known_unpaused(self, providers: Iterable[str]) -> bool:
        """Whether this process knows, without a read, that none of ``providers`` is
        paused (False: it does not know; :meth:`remaining` says)."""


class MemoryPauses:
    """Pauses in process memory, on the limiter's clock (tests move it by hand)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self._until: dict[str, float] = {}

    async def pause(self, provider: str, seconds: float) -> None:
        until = self.clock.now() + seconds
        if until > self._until.get(provider, 0.0):
            self._until[provider] = until

    def left(self, provider: str) -> float:
        """Seconds left of ``provider``'s pause (0.0 when not paused), without awaiting."""
        until = self._until.get(provider)
        return 0.0 if until is None else max(0.0, until - self.clock.now())

    def known_unpaused(self, providers: Iterable[str]) -> bool:
        if not self._until:
            return True
        now = self.clock.now()
        return all(self._until.get(name, 0.0) <= now for name in providers)

    async def remaining(self, providers: Iterable[str]) -> dict[str, float]:
        now = self.clock.now()
        out: dict[str, float] = {}
        for name in providers:
            left = self._until.get(name, 0.0) - now
            if left <= 0:
                self._until.pop(name, None)
            out[name] = max(0.0, left)
        return out


class RedisPauses:
    """Pauses shared through Redis; times on the wall clock, which every process shares.

    Reads are cached for ``cache_s`` (on the monotonic clock) per provider; this process's
    own :meth:`pause` drops the provider from the cache.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
        guard: Outage | None = None,
        cache_s: float = CACHE_S,
    ) -> None:
        from redis.exceptions import RedisError

        self.redis = redis
        self.clock = clock
        self.cache_s = cache_s
        self._prefix = f"{prefix}:pause"
        self._extend = redis.register_script(_EXTEND)
        self._guard = guard or Outage((RedisError,))
        #: provider -> (pause-until on the wall clock or None, when read on the monotonic clock)
        self._read: dict[str, tuple[float | None, float]] = {}
        self._reading: dict[tuple[str, ...], asyncio.Future[None]] = {}
        #: provider -> when this process last paused it (a read begun before is not kept)
        self._paused_at: dict[str, float] = {}

    def _key(self, provider: str) -> str:
        return f"{self._prefix}:{provider}"

    async def pause(self, provider: str, seconds: float) -> None:
        until = self.clock() + seconds
        ttl_ms = int(seconds * 1000) + _GRACE_MS
        self._read.pop(provider, None)
        await self._guard.run(
            "pause", lambda: self._extend([self._key(provider)], [repr(until), ttl_ms]), 0
        )
        self._read.pop(provider, None)
        self._paused_at[provider] = time.monotonic()

    def known_unpaused(self, providers: Iterable[str]) -> bool:
        return False  # another process may have paused one: only a read knows

    async def remaining(self, providers: Iterable[str]) -> dict[str, float]:
        names = list(providers)
        fresh_after = time.monotonic() - self.cache_s
        stale = tuple(n for n in names if self._read.get(n, (None, -math.inf))[1] <= fresh_after)
        if stale:
            reading = self._reading.get(stale)
            if reading is None:
                reading = asyncio.ensure_future(self._fetch(stale))
                self._reading[stale] = reading
                reading.add_done_callback(lambda _: self._reading.pop(stale, None))
            await asyncio.shield(reading)
        now = self.clock()
        out: dict[str, float] = {}
        for name in names:
            until = self._read.get(name, (None, 0.0))[0]
            out[name] = max(0.0, until - now) if until is not None else 0.0
        return out

    async def _fetch(self, names: tuple[str, ...]) -> None:
        started = time.monotonic()
        stored: list[Any] = await self._guard.run(
            "pauses", lambda: self.redis.mget([self._key(n) for n in names]), [None] * len(names)
        )
        for name, until in zip(names, stored, strict=True):
            if self._paused_at.get(name, -math.inf) < started:  # else it may predate the pause
                self._read[name] = (float(until) if until is not None else None, started)
