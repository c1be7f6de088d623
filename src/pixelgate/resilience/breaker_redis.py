"""Circuit breakers shared by every process through Redis (the scale-out deployment).

The same state machine as :class:`~pixelgate.resilience.breaker.MemoryBreakers`, kept in
Redis per provider:

- ``{prefix}:breaker:{provider}`` — hash: ``state``, ``epoch``, ``opened_at``,
  ``reopen_at``, ``probes`` (in flight), ``probe_ok``, ``opened_count``,
  ``last_failure``; it expires after a day without a state change or a call;
- ``{prefix}:breaker-calls:{provider}`` and ``{prefix}:breaker-fails:{provider}`` —
  sorted sets of the calls and failures in the rolling window (scored by time),
  expiring one window after the last call.

``allow``, ``record`` and ``reset`` are one Lua script each, so they are atomic across
processes: K probes are K in the whole deployment, and a late result of an older epoch
is ignored wherever it arrives. Times come from ``clock`` (the wall clock, which the
processes share; tests pass their own) and travel into the scripts as arguments; the
jittered cool-down is drawn here and applied by the script only when it opens. While
Redis is unreachable every call is admitted and nothing is recorded (``outage.py``).

Thousands of calls a second would cost two scripts each, so the common case is cheaper,
with a bounded staleness:

- a breaker read as *closed* here (by ``allow``, a snapshot, or a read of its state
  shared by the calls asking at the same moment) admits calls from memory for
  :data:`CLOSED_CACHE_S`: a breaker opened by another process is seen here at most that
  late (as a call already in flight sees it no sooner). A failure recorded here, a
  transition, a reset or new settings drop it, so this process's own failures are
  counted against what Redis holds. An open or half-open breaker is asked by script
  (half-open probes are counted in Redis);
- the successes of calls admitted while closed (they never change the state) are
  recorded together, within :data:`SUCCESS_FLUSH_S`, by one script call: another
  process's snapshot counts them that late; a failure recorded here, and
  :meth:`RedisBreakers.flush`, write them first. Those of the last moment before a
  process dies are not counted (they only dilute a failure ratio);
- a neutral result of a call that was not a probe changes nothing and is not sent.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from pixelgate.config import BreakerSettings
from pixelgate.resilience.breaker import (
    COOLDOWN_OVER,
    PROBE_SUCCEEDED,
    RESET_BY_ADMIN,
    BreakerSnapshot,
    BreakerState,
    Outcome,
    Permit,
    Transition,
    cooldown,
    log_transition,
    probe_failed,
    trip_reason,
)
from pixelgate.resilience.outage import Outage

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBreakers"]

#: a breaker's hash outlives its last change by this much (longer with a longer cool-down)
STATE_TTL_S = 24 * 3600.0
#: a permit admitted while Redis was unreachable: its result is not recorded
UNRECORDED = -1
#: how long a closed state read here admits calls without asking Redis again
CLOSED_CACHE_S = 0.1
#: how long a success waits to be recorded with the others (a failure here flushes them)
SUCCESS_FLUSH_S = 0.05
#: the keys of one breaker, in the order of the scripts' KEYS
_KINDS = ("breaker", "breaker-calls", "breaker-fails")
_FIELDS = ("state", "epoch", "opened_at", "reopen_at", "probes", "opened_count", "last_failure")

# KEYS: state. ARGV: enabled, now, half_open_probes, state ttl ms.
# Returns {allowed, state, probe, epoch, reopen_at, moved to half-open}.
_ALLOW = """
local h = KEYS[1]
local f = redis.call('HMGET', h, 'state', 'epoch', 'reopen_at', 'probes', 'probe_ok')
local state, epoch = f[1] or 'closed', tonumber(f[2]) or 0
if ARGV[1] == '0' then return {1, state, 0, epoch, '', 0} end
local probes, ok, moved = tonumber(f[4]) or 0, tonumber(f[5]) or 0, 0
if state == 'open' then
  if tonumber(ARGV[2]) < tonumber(f[3]) then return {0, state, 0, epoch, f[3], 0} end
  state, epoch, probes, ok, moved = 'half_open', epoch + 1, 0, 0, 1
  redis.call('HSET', h, 'state', state, 'epoch', epoch, 'probes', 0, 'probe_ok', 0)
  redis.call('PEXPIRE', h, ARGV[4])
end
if state == 'half_open' then
  if probes + ok >= tonumber(ARGV[3]) then return {0, state, 0, epoch, '', moved} end
  redis.call('HINCRBY', h, 'probes', 1)
  return {1, state, 1, epoch, '', moved}
end
return {1, state, 0, epoch, '', 0}
"""

# KEYS: state, calls, fails. ARGV: now, epoch, probe, outcome, has detail, detail,
# half_open_probes, failure_threshold, failure_ratio ('' = none), min_calls, horizon,
# reopen_at, state ttl ms, window ttl ms.
# Returns {kind, from state, failures, calls}: kind '' (no change), 'probe_failed',
# 'probe_succeeded', or how a closed breaker tripped: 'count' | 'ratio' (as trip()).
_RECORD = """
local h, calls, fails = KEYS[1], KEYS[2], KEYS[3]
local f = redis.call('HMGET', h, 'state', 'epoch', 'probes')
local state, epoch = f[1] or 'closed', tonumber(f[2]) or 0
if tonumber(ARGV[2]) ~= epoch then return {'', state, 0, 0} end
local outcome = ARGV[4]
local function note_failure()
  if ARGV[5] == '1' then
    redis.call('HSET', h, 'last_failure', ARGV[6])
  else
    redis.call('HDEL', h, 'last_failure')
  end
end
local function move(to)
  redis.call('HSET', h, 'state', to, 'epoch', epoch + 1, 'probes', 0, 'probe_ok', 0)
  if to == 'closed' then redis.call('DEL', calls, fails) end
  redis.call('PEXPIRE', h, ARGV[13])
end
local function open()
  redis.call('HSET', h, 'opened_at', ARGV[1], 'reopen_at', ARGV[12])
  redis.call('HINCRBY', h, 'opened_count', 1)
  move('open')
end
if ARGV[3] == '1' then
  redis.call('HSET', h, 'probes', math.max(0, (tonumber(f[3]) or 0) - 1))
  if outcome == 'failure' then
    note_failure()
    open()
    return {'probe_failed', state, 0, 0}
  end
  if outcome == 'success' then
    if redis.call('HINCRBY', h, 'probe_ok', 1) >= tonumber(ARGV[7]) then
      move('closed')
      return {'probe_succeeded', state, 0, 0}
    end
  end
  return {'', state, 0, 0}
end
if outcome == 'neutral' or state ~= 'closed' then return {'', state, 0, 0} end
local failed = outcome == 'failure'
if failed then note_failure() end
local seq = redis.call('HINCRBY', h, 'seq', 1)
redis.call('ZADD', calls, ARGV[1], seq)
if failed then redis.call('ZADD', fails, ARGV[1], seq) end
redis.call('ZREMRANGEBYSCORE', calls, '-inf', '(' .. ARGV[11])
redis.call('ZREMRANGEBYSCORE', fails, '-inf', '(' .. ARGV[11])
redis.call('PEXPIRE', calls, ARGV[14])
redis.call('PEXPIRE', fails, ARGV[14])
redis.call('PEXPIRE', h, ARGV[13])
if not failed then return {'', state, 0, 0} end
local n_fails, n_calls = redis.call('ZCARD', fails), redis.call('ZCARD', calls)
local kind = ''
if n_fails >= tonumber(ARGV[8]) then
  kind = 'count'
elseif ARGV[9] ~= '' and n_calls >= tonumber(ARGV[10])
    and n_fails / n_calls >= tonumber(ARGV[9]) then
  kind = 'ratio'
end
if kind ~= '' then open() end
return {kind, state, n_fails, n_calls}
"""

# The successes of calls admitted while closed, at one epoch (what _RECORD does with each).
# KEYS: state, calls, fails. ARGV: epoch, horizon, state ttl ms, window ttl ms, then the
# time of each success. Returns how many were counted (0: the epoch or state moved on).
_RECORD_SUCCESSES = """
local h, calls, fails = KEYS[1], KEYS[2], KEYS[3]
local f = redis.call('HMGET', h, 'state', 'epoch')
if tonumber(ARGV[1]) ~= (tonumber(f[2]) or 0) or (f[1] or 'closed') ~= 'closed' then
  return 0
end
local n = #ARGV - 4
local seq = redis.call('HINCRBY', h, 'seq', n)
for i = 1, n do
  redis.call('ZADD', calls, ARGV[4 + i], seq - n + i)
end
redis.call('ZREMRANGEBYSCORE', calls, '-inf', '(' .. ARGV[2])
redis.call('ZREMRANGEBYSCORE', fails, '-inf', '(' .. ARGV[2])
redis.call('PEXPIRE', calls, ARGV[4])
redis.call('PEXPIRE', fails, ARGV[4])
redis.call('PEXPIRE', h, ARGV[3])
return n
"""

# KEYS: state, calls, fails. ARGV: state ttl ms. Returns the state it left ('' if closed).
_RESET = """
local h = KEYS[1]
local f = redis.call('HMGET', h, 'state', 'epoch')
redis.call('DEL', KEYS[2], KEYS[3])
if (f[1] or 'closed') == 'closed' then return '' end
redis.call('HSET', h, 'state', 'closed', 'epoch', (tonumber(f[2]) or 0) + 1,
  'probes', 0, 'probe_ok', 0)
redis.call('PEXPIRE', h, ARGV[1])
return f[1]
"""


class RedisBreakers:
    """:class:`~pixelgate.resilience.breaker.Breakers` in Redis, shared by every process."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        settings: BreakerSettings | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        guard: Outage | None = None,
        cache_s: float = CLOSED_CACHE_S,
        success_flush_s: float = SUCCESS_FLUSH_S,
    ) -> None:
        self.redis = redis
        self.cache_s = cache_s
        self.success_flush_s = success_flush_s
        self.prefix = prefix
        self.settings = settings or BreakerSettings()
        self.clock = clock
        self._rng = rng or random.Random()
        self._guard = guard or Outage((RedisError,))
        self._allow = redis.register_script(_ALLOW)
        self._record = redis.register_script(_RECORD)
        self._reset = redis.register_script(_RESET)
        self._record_successes = redis.register_script(_RECORD_SUCCESSES)
        #: provider -> (epoch, when read on the monotonic clock) of a breaker read as closed
        self._closed: dict[str, tuple[int, float]] = {}
        #: provider -> when this process last changed or failed it (older reads are not kept)
        self._changed_at: dict[str, float] = {}
        self._changed_all_at = -math.inf
        #: successes waiting for the next shared script call: (provider, epoch, time)
        self._successes: list[tuple[str, int, float]] = []
        self._success_flusher: asyncio.Task[None] | None = None
        self._flush_now = asyncio.Event()
        #: one read of a breaker's state in flight per provider (see ``_closed_epoch``)
        self._checking: dict[str, asyncio.Future[int | None]] = {}
        # one snapshot read in flight per set of providers: the jobs planning meanwhile
        # share it (a read costs a round trip with 3 commands per provider)
        self._reading: dict[tuple[str, ...], asyncio.Future[dict[str, BreakerSnapshot]]] = {}

    def configure(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._closed.clear()
        self._changed_all_at = time.monotonic()

    def _forget(self, provider: str) -> None:
        """Ask Redis again next time: this process changed (or saw a failure of) it."""
        self._closed.pop(provider, None)
        self._changed_at[provider] = time.monotonic()

    def _note_closed(self, provider: str, epoch: int, read_at: float) -> bool:
        """Keep a closed state read at ``read_at``, unless this process changed it since."""
        if read_at <= max(self._changed_at.get(provider, -math.inf), self._changed_all_at):
            return False
        self._closed[provider] = (epoch, read_at)
        return True

    def _keys(self, provider: str) -> list[str]:
        return [f"{self.prefix}:{kind}:{provider}" for kind in _KINDS]

    def _state_ttl_ms(self) -> int:
        s = self.settings
        return math.ceil(max(STATE_TTL_S, 2 * s.cooldown_s + s.window_s) * 1000)

    async def allow(self, provider: str) -> tuple[Permit, list[Transition]]:
        s = self.settings
        if s.enabled:
            epoch = await self._closed_epoch(provider)
            if epoch is not None:
                return Permit(True, BreakerState.CLOSED, epoch=epoch), []
        read_at = time.monotonic()
        now = self.clock()
        args: list[str | int] = [
            int(s.enabled),
            repr(now),
            s.half_open_probes,
            self._state_ttl_ms(),
        ]
        reply = await self._guard.run(
            "breaker", lambda: self._allow(self._keys(provider)[:1], args), None
        )
        if reply is None:
            return Permit(True, BreakerState.CLOSED, epoch=UNRECORDED), []
        allowed, state, probe, epoch, reopen_at, moved = reply
        to = BreakerState(_text(state))
        transitions: list[Transition] = []
        if moved:
            transitions.append(Transition(provider, BreakerState.OPEN, to, COOLDOWN_OVER))
            log_transition(transitions[0])
            self._forget(provider)
        elif s.enabled and allowed and to == BreakerState.CLOSED:
            self._note_closed(provider, int(epoch), read_at)
        retry_in = float(reopen_at) - now if not allowed and to == BreakerState.OPEN else None
        permit = Permit(bool(allowed), to, probe=bool(probe), epoch=int(epoch), retry_in_s=retry_in)
        return permit, transitions

    async def _closed_epoch(self, provider: str) -> int | None:
        """The epoch of a breaker read as closed within ``cache_s``, else None. When the
        last read is older, the callers asking at the same moment share one new read."""
        cached = self._closed.get(provider)
        if cached is not None and time.monotonic() - cached[1] < self.cache_s:
            return cached[0]
        reading = self._checking.get(provider)
        if reading is None:
            reading = asyncio.ensure_future(self._read_closed(provider))
            self._checking[provider] = reading
            reading.add_done_callback(lambda _: self._checking.pop(provider, None))
        return await asyncio.shield(reading)

    async def _read_closed(self, provider: str) -> int | None:
        read_at = time.monotonic()
        fields = await self._guard.run(
            "breaker", lambda: self.redis.hmget(self._keys(provider)[0], ["state", "epoch"]), None
        )
        if fields is None or (fields[0] is not None and _text(fields[0]) != "closed"):
            return None  # Redis unreachable (the script answers that), or not closed
        epoch = int(fields[1] or 0)
        return epoch if self._note_closed(provider, epoch, read_at) else None

    async def record(
        self, provider: str, permit: Permit, outcome: Outcome, detail: str | None = None
    ) -> list[Transition]:
        s = self.settings
        if not s.enabled or not permit.allowed or permit.epoch == UNRECORDED:
            return []
        if not permit.probe and outcome == Outcome.NEUTRAL:
            return []  # the script would change nothing
        now = self.clock()
        if not permit.probe and outcome == Outcome.SUCCESS:
            self._add_success(provider, permit.epoch, now)
            return []  # a success admitted while closed never changes the state
        self._forget(provider)
        await self.flush()  # the failure counts against this process's successes
        args: list[str | int] = [
            repr(now),
            permit.epoch,
            int(permit.probe),
            outcome.value,
            int(detail is not None),
            detail or "",
            s.half_open_probes,
            s.failure_threshold,
            "" if s.failure_ratio is None else repr(s.failure_ratio),
            s.min_calls,
            repr(now - s.window_s),
            repr(now + cooldown(s, self._rng)),
            self._state_ttl_ms(),
            math.ceil(s.window_s * 1000) + 1000,
        ]
        reply = await self._guard.run(
            "breaker", lambda: self._record(self._keys(provider), args), None
        )
        self._forget(provider)  # a read begun before the script may predate it
        if not reply or not reply[0]:
            return []
        kind, before = _text(reply[0]), BreakerState(_text(reply[1]))
        failures, calls = int(reply[2]), int(reply[3])
        if kind == "probe_failed":
            transition = Transition(provider, before, BreakerState.OPEN, probe_failed(detail))
        elif kind == "probe_succeeded":
            transition = Transition(provider, before, BreakerState.CLOSED, PROBE_SUCCEEDED)
        else:
            reason = trip_reason(kind, failures, calls, s, detail)
            transition = Transition(provider, before, BreakerState.OPEN, reason)
        log_transition(transition)
        return [transition]

    def _add_success(self, provider: str, epoch: int, now: float) -> None:
        """Record a success within ``success_flush_s``, with the others meanwhile."""
        self._successes.append((provider, epoch, now))
        if self._success_flusher is None:
            self._success_flusher = asyncio.get_running_loop().create_task(self._write_successes())

    async def flush(self) -> None:
        """Write the successes waiting to be recorded now (read-your-writes; shutdown)."""
        flusher = self._success_flusher
        if flusher is not None:
            self._flush_now.set()
            await asyncio.shield(flusher)

    async def _write_successes(self) -> None:
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.success_flush_s)
            while self._successes:
                batch, self._successes = self._successes, []
                groups: dict[tuple[str, int], list[float]] = {}
                for provider, epoch, now in batch:
                    groups.setdefault((provider, epoch), []).append(now)
                s = self.settings
                for (provider, epoch), times in groups.items():
                    args: list[str | int] = [
                        epoch,
                        repr(max(times) - s.window_s),
                        self._state_ttl_ms(),
                        math.ceil(s.window_s * 1000) + 1000,
                        *map(repr, times),
                    ]
                    keys = self._keys(provider)
                    await self._guard.run(
                        "breaker", partial(self._record_successes, keys, args), None
                    )
        finally:
            self._success_flusher = None
            self._flush_now.clear()

    def known_closed(self, providers: Iterable[str]) -> bool:
        return False  # other processes move these breakers: only a read knows

    async def snapshots(self, providers: Iterable[str]) -> dict[str, BreakerSnapshot]:
        names = tuple(providers)
        reading = self._reading.get(names)
        if reading is None:
            reading = asyncio.ensure_future(self._read_snapshots(list(names)))
            self._reading[names] = reading
            reading.add_done_callback(lambda _: self._reading.pop(names, None))
        return dict(await asyncio.shield(reading))

    async def _read_snapshots(self, names: list[str]) -> dict[str, BreakerSnapshot]:
        read_at = time.monotonic()
        now = self.clock()
        horizon = repr(now - self.settings.window_s)

        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=True) as pipe:
                for name in names:
                    state, calls, fails = self._keys(name)
                    pipe.hmget(state, _FIELDS)
                    pipe.zcount(calls, horizon, "+inf")
                    pipe.zcount(fails, horizon, "+inf")
                return list(await pipe.execute())

        replies = await self._guard.run("breaker snapshots", read, None)
        if replies is None:
            return {name: BreakerSnapshot(name, BreakerState.CLOSED, 0, 0) for name in names}
        out: dict[str, BreakerSnapshot] = {}
        for i, name in enumerate(names):
            fields, calls, failures = replies[3 * i : 3 * i + 3]
            texts = [None if v is None else _text(v) for v in fields]
            out[name] = _snapshot(name, texts, int(calls), int(failures), now)
            if self.settings.enabled and out[name].state == BreakerState.CLOSED:
                self._note_closed(name, int(texts[1] or 0), read_at)
        return out

    async def reset(self, provider: str) -> list[Transition]:
        self._forget(provider)
        await self.flush()  # successes recorded before the reset are cleared with it
        reply = await self._guard.run(
            "breaker reset",
            lambda: self._reset(self._keys(provider), [self._state_ttl_ms()]),
            b"",
        )
        self._forget(provider)
        if not reply:
            return []
        transition = Transition(
            provider, BreakerState(_text(reply)), BreakerState.CLOSED, RESET_BY_ADMIN
        )
        log_transition(transition)
        return [transition]


def _snapshot(
    name: str, fields: list[str | None], calls: int, failures: int, now: float
) -> BreakerSnapshot:
    state_, _, opened_at, reopen_at, probes, opened_count, last_failure = fields
    state = BreakerState(state_ or BreakerState.CLOSED.value)
    is_open = state == BreakerState.OPEN
    return BreakerSnapshot(
        provider=name,
        state=state,
        failures=failures,
        calls=calls,
        retry_in_s=max(0.0, float(reopen_at or 0) - now) if is_open else None,
        open_for_s=now - float(opened_at or now) if state != BreakerState.CLOSED else None,
        probes_in_flight=int(probes or 0),
        opened_count=int(opened_count or 0),
        last_failure=last_failure,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
