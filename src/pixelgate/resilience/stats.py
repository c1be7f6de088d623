"""Recent attempts per provider, in memory: success rate and latency percentiles.

The router reads them for the ``latency`` policy and for hedging delays; ``GET
/admin/providers`` shows them. A bounded window per provider (count and age), so
memory stays flat however long the process runs.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AttemptStats", "ProviderStats"]

WINDOW_ATTEMPTS = 200
WINDOW_S = 15 * 60.0
#: observations needed before a percentile is trusted
MIN_SAMPLES = 3


@dataclass(frozen=True)
class _Attempt:
    at: float
    ok: bool
    latency_ms: float
    error: str | None


@dataclass(frozen=True)
class ProviderStats:
    attempts: int
    succeeded: int
    failed: int
    success_rate: float | None
    p50_ms: float | None
    p90_ms: float | None
    avg_ms: float | None
    errors: dict[str, int]
    last_error: str | None

    def as_dict(self) -> dict[str, object]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 1)

        return {
            "attempts": self.attempts,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "success_rate": None if self.success_rate is None else round(self.success_rate, 4),
            "latency_ms": {"p50": r(self.p50_ms), "p90": r(self.p90_ms), "avg": r(self.avg_ms)},
            "errors": self.errors,
            "last_error": self.last_error,
        }


class AttemptStats:
    """A rolling window of provider attempts."""

    def __init__(
        self,
        *,
        max_attempts: int = WINDOW_ATTEMPTS,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self.clock = clock
        self._attempts: dict[str, deque[_Attempt]] = {}
        # the latencies of the window's successful attempts, kept sorted as attempts come
        # and go: routing asks for a percentile on every job, and sorting each time cost
        # more than the rest of the route planning
        self._ok_sorted: dict[str, list[float]] = {}

    def record(self, provider: str, *, ok: bool, latency_ms: float, error: str | None) -> None:
        window = self._attempts.get(provider)
        if window is None:
            window = self._attempts[provider] = deque()
            self._ok_sorted[provider] = []
        if len(window) >= self.max_attempts:
            self._drop(provider, window.popleft())
        window.append(_Attempt(self.clock(), ok, latency_ms, error))
        if ok:
            bisect.insort(self._ok_sorted[provider], latency_ms)

    def _drop(self, provider: str, attempt: _Attempt) -> None:
        if attempt.ok:
            values = self._ok_sorted[provider]
            del values[bisect.bisect_left(values, attempt.latency_ms)]

    def _recent(self, provider: str) -> list[_Attempt]:
        self._expire(provider)
        return list(self._attempts.get(provider, ()))

    def _expire(self, provider: str) -> None:
        window = self._attempts.get(provider)
        if not window:
            return
        horizon = self.clock() - self.window_s
        while window and window[0].at < horizon:
            self._drop(provider, window.popleft())

    def latency_ms(self, provider: str, percentile: float) -> float | None:
        """Latency of successful attempts at ``percentile`` (0-1); None with too few."""
        self._expire(provider)
        values = self._ok_sorted.get(provider, [])
        if len(values) < MIN_SAMPLES:
            return None
        return _percentile(values, percentile)

    def summary(self, provider: str) -> ProviderStats:
        recent = self._recent(provider)
        ok = sorted(a.latency_ms for a in recent if a.ok)
        failed = [a for a in recent if not a.ok]
        errors = Counter(a.error or "error" for a in failed)
        return ProviderStats(
            attempts=len(recent),
            succeeded=len(ok),
            failed=len(failed),
            success_rate=len(ok) / len(recent) if recent else None,
            p50_ms=_percentile(ok, 0.5) if ok else None,
            p90_ms=_percentile(ok, 0.9) if ok else None,
            avg_ms=sum(ok) / len(ok) if ok else None,
            errors=dict(errors),
            last_error=failed[-1].error if failed else None,
        )


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    rank = max(1, math.ceil(q * len(values)))
    return values[min(rank, len(values)) - 1]
