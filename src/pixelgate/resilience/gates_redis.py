"""Concurrency gates shared by every process through Redis: leases with a heartbeat.

Keys of one gate (``p:{provider}`` or ``a:{account}:{provider}``), all under
``{prefix}:gate``:

- ``{prefix}:gate-leases:{key}`` — sorted set: lease id → expiry;
- ``{prefix}:gate-queue:{key}`` — sorted set: waiter id → ticket (arrival order);
- ``{prefix}:gate-alive:{key}`` — sorted set: waiter id → expiry;
- ``{prefix}:gate:{key}`` — hash: the newest ``limit`` and the ticket counter.

Every change is one Lua script timed by the Redis server's clock (``TIME``), so the
processes' clocks do not matter, and it first drops expired leases and waiters. A lease
lives ``lease_ttl_s`` (30 s) unless renewed: one heartbeat task per process renews all
its leases every third of that, so a long call keeps its slot and the slots of a killed
process come back within the TTL. Waiters are served in ticket order across processes
and keep their place by polling (a waiter silent for a third of the TTL is dropped).
A release publishes ``{key}\\n{ticket}`` on ``{prefix}:gates``: the waiters up to that
ticket may enter now. Waiters wake on it and also poll with backoff (at most 250 ms
apart while this process is not subscribed, 2 s while it is) in case a message is lost.
While Redis is unreachable the gates grant at once (see ``outage.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Coroutine
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import structlog
from redis.exceptions import RedisError

from pixelgate.resilience.outage import Outage

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["LEASE_TTL_S", "RedisGates"]

log = structlog.get_logger("pixelgate.gates")

LEASE_TTL_S = 30.0
POLL_MIN_S = 0.05
#: longest wait between two polls while the wake-up subscription is down
POLL_MAX_S = 0.25
#: the same while subscribed: wake-ups do the work, polls only cover a lost message
POLL_SUBSCRIBED_MAX_S = 2.0
READ_TIMEOUT_S = 1.0
RECONNECT_MAX_S = 2.0
TRY, WAIT = "try", "wait"
#: the keys of one gate, in the order of the scripts' KEYS
_KINDS = ("gate", "gate-leases", "gate-queue", "gate-alive")

# KEYS: meta, leases, queue, alive. Drops what expired, defines notify(): publish the
# last ticket that fits in the free slots (0 when none) and return it.
_PRELUDE = """
local meta, leases, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local purged = redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now)
for i = 1, #dead do redis.call('ZREM', queue, dead[i]) end
purged = purged + redis.call('ZREMRANGEBYSCORE', alive, '-inf', now)
local function notify(limit, channel, gate)
  local free = limit - redis.call('ZCARD', leases)
  if free <= 0 then return 0 end
  local last = redis.call('ZRANGE', queue, free - 1, free - 1, 'WITHSCORES')
  if #last == 0 then last = redis.call('ZRANGE', queue, -1, -1, 'WITHSCORES') end
  if #last == 0 then return 0 end
  redis.call('PUBLISH', channel, gate .. '\\n' .. last[2])
  return tonumber(last[2])
end
"""

# ARGV: id, mode, given limit ('' = the newest stored), own limit, lease ttl ms,
# waiter ttl ms, channel, gate key. Returns {granted, ticket, in_flight, waiting}.
_ACQUIRE = """
local id, mode, ttl, waiter_ttl = ARGV[1], ARGV[2], tonumber(ARGV[5]), tonumber(ARGV[6])
local limit = tonumber(redis.call('HGET', meta, 'limit')) or tonumber(ARGV[4])
local raised = false
if ARGV[3] ~= '' then
  local given = tonumber(ARGV[3])
  raised = given > limit
  limit = given
  redis.call('HSET', meta, 'limit', given)
end
local free = limit - redis.call('ZCARD', leases)
local ticket = redis.call('ZSCORE', queue, id)
local ahead
if ticket then ahead = redis.call('ZRANK', queue, id) else ahead = redis.call('ZCARD', queue) end
local granted = 0
if ahead < free then
  granted = 1
  ticket = 0
  redis.call('ZADD', leases, now + ttl, id)
  redis.call('ZREM', queue, id)
  redis.call('ZREM', alive, id)
elseif mode == 'wait' then
  if not ticket then
    ticket = redis.call('HINCRBY', meta, 'seq', 1)
    redis.call('ZADD', queue, ticket, id)
  end
  redis.call('ZADD', alive, now + waiter_ttl, id)
end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
if raised or purged > 0 then notify(limit, ARGV[7], ARGV[8]) end
return {granted, tonumber(ticket) or 0, redis.call('ZCARD', leases), redis.call('ZCARD', queue)}
"""

# Gives back a lease or a place in the queue. ARGV: id, own limit, channel, gate key.
_RELEASE = """
local removed = redis.call('ZREM', leases, ARGV[1]) + redis.call('ZREM', queue, ARGV[1])
redis.call('ZREM', alive, ARGV[1])
if removed + purged == 0 then return 0 end
return notify(tonumber(redis.call('HGET', meta, 'limit')) or tonumber(ARGV[2]), ARGV[3], ARGV[4])
"""

_USAGE = """
return {redis.call('ZCARD', leases), redis.call('ZCARD', queue)}
"""

# KEYS: lease sets; ARGV: ttl ms, then per key its count and lease ids. A lease that
# already expired stays expired (its slot may be someone else's now).
_RENEW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl, at, kept = tonumber(ARGV[1]), 2, 0
for k = 1, #KEYS do
  local n = tonumber(ARGV[at])
  for j = 1, n do
    local id = ARGV[at + j]
    local expiry = tonumber(redis.call('ZSCORE', KEYS[k], id))
    if expiry and expiry > now then
      redis.call('ZADD', KEYS[k], now + ttl, id)
      kept = kept + 1
    end
  end
  at = at + n + 1
  redis.call('PEXPIRE', KEYS[k], ttl * 2)
end
return kept
"""


class RedisGates:
    """The :class:`~pixelgate.resilience.ratelimit.Gates` of a scale-out deployment."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        lease_ttl_s: float = LEASE_TTL_S,
        guard: Outage | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lease_ttl_s = lease_ttl_s
        self._ttl_ms = max(1, int(lease_ttl_s * 1000))
        self._waiter_ttl_ms = max(1, self._ttl_ms // 3)
        self._channel = f"{prefix}:gates"
        self._guard = guard or Outage((RedisError,))
        self._acquire = redis.register_script(_PRELUDE + _ACQUIRE)
        self._release = redis.register_script(_PRELUDE + _RELEASE)
        self._usage = redis.register_script(_PRELUDE + _USAGE)
        self._renew = redis.register_script(_RENEW)
        self._owner = secrets.token_hex(6)
        self._ids = itertools.count(1)
        #: leases this process holds per gate; None: granted while Redis was unreachable
        self._held: dict[str, list[str | None]] = {}
        self._limits: dict[str, int] = {}
        #: local waiters per gate: wake-up future → ticket
        self._waiters: dict[str, dict[asyncio.Future[None], int]] = {}
        self._subscribed = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # Gates -------------------------------------------------------------------------

    async def try_acquire(self, key: str, limit: int) -> bool:
        lease = self._new_lease()
        reply = await self._attempt(key, lease, TRY, limit, limit)
        if reply is None:
            self._hold(key, None)
            return True
        if reply[0]:
            self._hold(key, lease)
        return bool(reply[0])

    async def acquire(self, key: str, limit: int) -> None:
        lease = self._new_lease()
        try:
            await self._wait(key, lease, limit)
        except BaseException:
            # cancelled (or failed) while waiting, perhaps just as a slot was granted
            await asyncio.shield(self._spawn(self._drop(key, lease)))
            raise

    async def release(self, key: str) -> None:
        held = self._held.get(key)
        if not held:
            return
        lease = None if None in held else held[-1]
        held.remove(lease)
        if not held:
            del self._held[key]
        if lease is not None:
            await asyncio.shield(self._spawn(self._drop(key, lease)))

    async def usage(self, key: str) -> tuple[int, int]:
        reply = await self._guard.run(
            "gate usage", lambda: self._usage(self._keys(key), []), [0, 0]
        )
        return int(reply[0]), int(reply[1])

    async def close(self) -> None:
        for task in (self._heartbeat, self._listener):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._heartbeat = self._listener = None
        held = [(key, lease) for key, leases in self._held.items() for lease in leases]
        self._held.clear()
        for key, lease in held:
            if lease is not None:
                await self._drop(key, lease)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # Internals ---------------------------------------------------------------------

    def _keys(self, key: str) -> list[str]:
        return [f"{self.prefix}:{kind}:{key}" for kind in _KINDS]

    def _new_lease(self) -> str:
        return f"{self._owner}:{next(self._ids)}"

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _attempt(
        self, key: str, lease: str, mode: str, given: int | None, limit: int
    ) -> tuple[int, int] | None:
        """One try: ``(granted, ticket)``, or None when Redis is unreachable."""
        self._limits[key] = limit
        wait_ttl = self._waiter_ttl_ms
        args = [lease, mode, "" if given is None else given, limit, self._ttl_ms, wait_ttl]
        args += [self._channel, key]
        reply = await self._guard.run("gate", lambda: self._acquire(self._keys(key), args), None)
        if reply is None:
            return None
        return int(reply[0]), int(reply[1])

    async def _wait(self, key: str, lease: str, limit: int) -> None:
        given: int | None = limit
        ticket = 0
        delay = POLL_MIN_S
        loop = asyncio.get_running_loop()
        while True:
            wake: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(key, {})[wake] = ticket
            try:
                reply = await self._attempt(key, lease, WAIT, given, limit)
                if reply is None or reply[0]:
                    self._hold(key, None if reply is None else lease)
                    return
                given, ticket = None, reply[1]  # from now on the newest stored limit applies
                self._waiters[key][wake] = ticket
                self._start_listener()
                with suppress(TimeoutError):
                    await asyncio.wait_for(wake, delay)
                delay = min(delay * 2, self._poll_cap())
            finally:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.pop(wake, None)
                    if not waiters:
                        del self._waiters[key]

    def _poll_cap(self) -> float:
        cap = POLL_SUBSCRIBED_MAX_S if self._subscribed else POLL_MAX_S
        return min(cap, self._waiter_ttl_ms / 4000)

    def _hold(self, key: str, lease: str | None) -> None:
        self._held.setdefault(key, []).append(lease)
        if lease is not None and self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._renew_forever(), name="pixelgate-gates")

    async def _drop(self, key: str, lease: str) -> None:
        args: list[str | int] = [lease, self._limits.get(key, 1), self._channel, key]
        ticket = await self._guard.run(
            "gate release", lambda: self._release(self._keys(key), args), 0
        )
        if ticket:
            self._wake(key, int(ticket))

    def _wake(self, key: str, ticket: int) -> None:
        for wake, waiter_ticket in self._waiters.get(key, {}).items():
            if waiter_ticket <= ticket and not wake.done():
                wake.set_result(None)

    def _wake_all(self) -> None:
        for key in list(self._waiters):
            self._wake(key, 2**62)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            await self._renew_all()

    async def _renew_all(self) -> None:
        held = {k: [x for x in leases if x] for k, leases in self._held.items()}
        held = {k: leases for k, leases in held.items() if leases}
        if not held:
            return
        keys = [self._keys(k)[1] for k in held]
        args: list[Any] = [self._ttl_ms]
        for leases in held.values():
            args += [len(leases), *leases]
        count = sum(len(leases) for leases in held.values())
        kept = await self._guard.run("gate heartbeat", lambda: self._renew(keys, args), count)
        if int(kept) < count:
            # the process stalled past the TTL, or Redis lost its data (a restart)
            log.warning("gate_leases_lost", lost=count - int(kept), held=count)

    def _start_listener(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever(), name="pixelgate-gates")

    async def _listen_forever(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._subscribed = True
                delay = 0.1
                self._wake_all()  # anything released while we were not listening: look again
                while True:
                    message = await pubsub.get_message(timeout=READ_TIMEOUT_S)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["data"])
            except (RedisError, OSError):
                self._subscribed = False
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
            finally:
                self._subscribed = False
                with suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _dispatch(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        key, _, ticket = text.rpartition("\n")
        with suppress(ValueError):
            self._wake(key, int(float(ticket)))
