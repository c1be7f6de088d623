"""Circuit breakers, one per provider instance.

    closed ──(failures in the rolling window reach the threshold)──▶ open
    open ──(cool-down ± jitter passed; checked on the next call)──▶ half-open
    half-open ──(K probes admitted; all succeed)──▶ closed
    half-open ──(a probe fails)──▶ open (a new cool-down)

Only failures that say the provider is unwell count: transient errors (5xx, connection
resets), timeouts. A refusal or an invalid request proves the provider answered (a
success); a 429 or an authentication error says nothing about its health (neutral).

:class:`Breakers` is the interface the router uses; :class:`MemoryBreakers` keeps the
state in this process (the embedded deployment). ``RedisBreakers`` (``breaker_redis.py``)
keeps the same state in Redis, changed by one Lua script per operation, so every process
of a scale-out deployment shares it. Both open with :func:`trip` and :func:`cooldown` and
word their transitions with the same helpers.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import structlog

from pixelgate.config import BreakerSettings
from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    Refused,
)

__all__ = [
    "COOLDOWN_OVER",
    "DEADLINE_EXCEEDED",
    "PROBE_SUCCEEDED",
    "RESET_BY_ADMIN",
    "BreakerSnapshot",
    "BreakerState",
    "Breakers",
    "MemoryBreakers",
    "Outcome",
    "Permit",
    "Transition",
    "cooldown",
    "log_transition",
    "outcome_of",
    "probe_failed",
    "trip",
    "trip_reason",
]

log = structlog.get_logger("pixelgate.breaker")

SERVER_ERROR = 500
#: the error code of a call cut short by the generation's overall deadline
DEADLINE_EXCEEDED = "deadline_exceeded"
COOLDOWN_OVER = "cool-down over"
PROBE_SUCCEEDED = "probe succeeded"
RESET_BY_ADMIN = "reset by an admin"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    #: says nothing about the provider's health (429, auth error, our own cancellation)
    NEUTRAL = "neutral"


def outcome_of(error: BaseException | None) -> Outcome:
    """How a call's result counts for the breaker."""
    if error is None or isinstance(error, Refused | InvalidRequest):
        return Outcome.SUCCESS
    if isinstance(error, ProviderRateLimited | ProviderAuthError):
        return Outcome.NEUTRAL
    if isinstance(error, ProviderError) and error.code == DEADLINE_EXCEEDED:
        return Outcome.NEUTRAL  # our own time budget ran out, not the provider's timeout
    if isinstance(error, ProviderError):
        if error.status_code is not None and error.status_code < SERVER_ERROR:
            return Outcome.NEUTRAL if not error.retryable else Outcome.FAILURE
        return Outcome.FAILURE
    return Outcome.NEUTRAL


@dataclass(frozen=True)
class Permit:
    """The answer to "may I call this provider now?"."""

    allowed: bool
    state: BreakerState
    probe: bool = False
    #: the breaker's epoch when admitted: a late result of an older epoch is ignored
    epoch: int = 0
    #: seconds until an open breaker lets a probe through
    retry_in_s: float | None = None


@dataclass(frozen=True)
class Transition:
    provider: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {
            "provider": self.provider,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class BreakerSnapshot:
    provider: str
    state: BreakerState
    failures: int
    calls: int
    retry_in_s: float | None = None
    open_for_s: float | None = None
    probes_in_flight: int = 0
    opened_count: int = 0
    last_failure: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "failures": self.failures,
            "calls": self.calls,
            "retry_in_s": None if self.retry_in_s is None else round(self.retry_in_s, 3),
            "open_for_s": None if self.open_for_s is None else round(self.open_for_s, 3),
            "probes_in_flight": self.probes_in_flight,
            "opened_count": self.opened_count,
            "last_failure": self.last_failure,
        }


def trip(failures: int, calls: int, settings: BreakerSettings) -> str | None:
    """Why a closed breaker opens with these counts in its window: ``"count"``, ``"ratio"``
    or None (stays closed). The Redis script implements the same test in Lua."""
    if failures >= settings.failure_threshold:
        return "count"
    if (
        settings.failure_ratio is not None
        and calls >= settings.min_calls
        and failures / calls >= settings.failure_ratio
    ):
        return "ratio"
    return None


def trip_reason(
    kind: str, failures: int, calls: int, settings: BreakerSettings, detail: str | None
) -> str:
    """The reason of a closed → open transition decided by :func:`trip`."""
    if kind == "count":
        reason = f"{failures} failures in {settings.window_s:g} s"
    else:
        reason = f"{failures} of {calls} calls failed in {settings.window_s:g} s"
    return f"{reason}; last: {detail or 'error'}"


def probe_failed(detail: str | None) -> str:
    return f"probe failed: {detail or 'error'}"


def cooldown(settings: BreakerSettings, rng: random.Random) -> float:
    """Seconds an opened breaker stays open: the cool-down ± its jitter."""
    jitter = settings.cooldown_s * settings.cooldown_jitter
    return max(0.0, settings.cooldown_s + rng.uniform(-jitter, jitter))


def log_transition(transition: Transition) -> None:
    log.info(
        "breaker_state_changed",
        provider=transition.provider,
        from_state=transition.from_state.value,
        to_state=transition.to_state.value,
        reason=transition.reason,
    )


class Breakers(Protocol):
    """Breaker state of every provider instance (memory here; Redis for scale-out)."""

    settings: BreakerSettings

    def configure(self, settings: BreakerSettings) -> None:
        """New thresholds, applied from the next call (hot configuration)."""

    async def allow(self, provider: str) -> tuple[Permit, list[Transition]]:
        """Admit a call (or not); may move open → half-open once the cool-down passed."""

    async def record(
        self, provider: str, permit: Permit, outcome: Outcome, detail: str | None = None
    ) -> list[Transition]:
        """The admitted call ended with ``outcome``."""

    async def snapshots(self, providers: Iterable[str]) -> dict[str, BreakerSnapshot]:
        """Current state, read-only (the router skips open breakers; admin shows them)."""

    def known_closed(self, providers: Iterable[str]) -> bool:
        """Whether this process knows, without a read, that every one of ``providers`` is
        closed (False: it does not know; :meth:`snapshots` says)."""

    async def reset(self, provider: str) -> list[Transition]:
        """Back to closed with empty counters (admin)."""


class _Window:
    """The rolling window of calls (time, failed) with its failure count kept as calls
    come and go: a snapshot is read on every route plan, so it must not walk the window
    (thousands of calls a minute under load)."""

    __slots__ = ("_calls", "failures")

    def __init__(self) -> None:
        self._calls: deque[tuple[float, bool]] = deque()
        self.failures = 0

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, now: float, failed: bool) -> None:
        self._calls.append((now, failed))
        self.failures += failed

    def trim(self, horizon: float) -> None:
        calls = self._calls
        while calls and calls[0][0] < horizon:
            self.failures -= calls.popleft()[1]

    def clear(self) -> None:
        self._calls.clear()
        self.failures = 0


@dataclass
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    epoch: int = 0
    calls: _Window = field(default_factory=_Window)
    opened_at: float = 0.0
    reopen_at: float = 0.0
    probes_in_flight: int = 0
    probe_successes: int = 0
    opened_count: int = 0
    last_failure: str | None = None


class MemoryBreakers:
    """Breakers in process memory. Every method runs without awaiting, so it is atomic."""

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or BreakerSettings()
        self.clock = clock
        self._rng = rng or random.Random()
        self._breakers: dict[str, _Breaker] = {}
        #: the snapshot of a provider never called yet, made once (snapshots are frozen)
        self._unused: dict[str, BreakerSnapshot] = {}
        #: providers whose breaker is open or half-open: every run's plan asks whether
        #: its candidates are among them, and the answer is almost always no
        self._not_closed: set[str] = set()

    def configure(self, settings: BreakerSettings) -> None:
        self.settings = settings

    def _get(self, provider: str) -> _Breaker:
        breaker = self._breakers.get(provider)
        if breaker is None:
            breaker = self._breakers[provider] = _Breaker()
        return breaker

    async def allow(self, provider: str) -> tuple[Permit, list[Transition]]:
        b = self._get(provider)
        transitions: list[Transition] = []
        if not self.settings.enabled:
            return Permit(True, b.state, epoch=b.epoch), transitions
        now = self.clock()
        if b.state == BreakerState.OPEN:
            if now < b.reopen_at:
                return Permit(False, b.state, retry_in_s=b.reopen_at - now), transitions
            transitions.append(self._move(provider, b, BreakerState.HALF_OPEN, COOLDOWN_OVER))
        if b.state == BreakerState.HALF_OPEN:
            if b.probes_in_flight + b.probe_successes >= self.settings.half_open_probes:
                return Permit(False, b.state), transitions
            b.probes_in_flight += 1
            return Permit(True, b.state, probe=True, epoch=b.epoch), transitions
        return Permit(True, b.state, epoch=b.epoch), transitions

    async def record(
        self, provider: str, permit: Permit, outcome: Outcome, detail: str | None = None
    ) -> list[Transition]:
        b = self._get(provider)
        if not self.settings.enabled or not permit.allowed or permit.epoch != b.epoch:
            return []  # admitted before the last state change: says nothing about now
        now = self.clock()
        s = self.settings
        if permit.probe:
            b.probes_in_flight = max(0, b.probes_in_flight - 1)
            if outcome == Outcome.FAILURE:
                b.last_failure = detail
                return [self._open(provider, b, now, probe_failed(detail))]
            if outcome == Outcome.SUCCESS:
                b.probe_successes += 1
                if b.probe_successes >= s.half_open_probes:
                    return [self._move(provider, b, BreakerState.CLOSED, PROBE_SUCCEEDED)]
            return []
        if outcome == Outcome.NEUTRAL or b.state != BreakerState.CLOSED:
            return []
        failed = outcome == Outcome.FAILURE
        if failed:
            b.last_failure = detail
        b.calls.add(now, failed)
        self._trim(b, now)
        if not failed:
            return []
        failures = b.calls.failures
        kind = trip(failures, len(b.calls), s)
        if kind is None:
            return []
        reason = trip_reason(kind, failures, len(b.calls), s, detail)
        return [self._open(provider, b, now, reason)]

    async def snapshots(self, providers: Iterable[str]) -> dict[str, BreakerSnapshot]:
        now = self.clock()
        out: dict[str, BreakerSnapshot] = {}
        for name in providers:
            b = self._breakers.get(name)
            if b is None:  # every plan snapshots every provider: most were never called
                unused = self._unused.get(name)
                if unused is None:
                    unused = self._unused[name] = BreakerSnapshot(
                        name, BreakerState.CLOSED, failures=0, calls=0
                    )
                out[name] = unused
                continue
            self._trim(b, now)
            is_open = b.state == BreakerState.OPEN
            out[name] = BreakerSnapshot(
                provider=name,
                state=b.state,
                failures=b.calls.failures,
                calls=len(b.calls),
                retry_in_s=max(0.0, b.reopen_at - now) if is_open else None,
                open_for_s=now - b.opened_at if b.state != BreakerState.CLOSED else None,
                probes_in_flight=b.probes_in_flight,
                opened_count=b.opened_count,
                last_failure=b.last_failure,
            )
        return out

    def known_closed(self, providers: Iterable[str]) -> bool:
        not_closed = self._not_closed
        return not not_closed or not_closed.isdisjoint(providers)

    async def reset(self, provider: str) -> list[Transition]:
        b = self._get(provider)
        if b.state == BreakerState.CLOSED:
            b.calls.clear()
            return []
        return [self._move(provider, b, BreakerState.CLOSED, RESET_BY_ADMIN)]

    def _trim(self, b: _Breaker, now: float) -> None:
        b.calls.trim(now - self.settings.window_s)

    def _open(self, provider: str, b: _Breaker, now: float, reason: str) -> Transition:
        b.opened_at = now
        b.reopen_at = now + cooldown(self.settings, self._rng)
        b.opened_count += 1
        return self._move(provider, b, BreakerState.OPEN, reason)

    def _move(self, provider: str, b: _Breaker, to: BreakerState, reason: str) -> Transition:
        transition = Transition(provider, b.state, to, reason)
        b.state = to
        if to == BreakerState.CLOSED:
            self._not_closed.discard(provider)
        else:
            self._not_closed.add(provider)
        b.epoch += 1
        b.probes_in_flight = 0
        b.probe_successes = 0
        if to == BreakerState.CLOSED:
            b.calls.clear()
        log_transition(transition)
        return transition
