"""Failing open while Redis (the shared state of a scale-out deployment) is unreachable.

Breakers, gates, rate windows and pauses protect providers; none of them is worth
failing a paid job for. While Redis is down every call answers its permissive fallback
(breaker closed, slot granted, no wait), the first failure is logged once and Redis is
left alone for :data:`HOLD_S` before the next try, so a dead connection costs one
timeout per second and process, not one per call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

__all__ = ["HOLD_S", "Outage"]

log = structlog.get_logger("pixelgate.shared_state")

#: after a failure, answer the fallback without trying Redis for this long
HOLD_S = 1.0

T = TypeVar("T")


class Outage:
    """Runs calls to the shared store; on one of ``errors`` returns the fallback instead."""

    def __init__(
        self,
        errors: tuple[type[BaseException], ...],
        *,
        hold_s: float = HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.errors = errors
        self.hold_s = hold_s
        self.clock = clock
        self.down = False
        self._skip_until = float("-inf")

    async def run(self, what: str, call: Callable[[], Awaitable[T]], fallback: T) -> T:
        """``await call()``, or ``fallback`` while the store is unreachable."""
        if self.clock() < self._skip_until:
            return fallback
        try:
            result = await call()
        except self.errors as exc:
            self._skip_until = self.clock() + self.hold_s
            if not self.down:
                self.down = True
                log.warning(
                    "shared_state_unavailable",
                    what=what,
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                )
            return fallback
        if self.down:
            self.down = False
            log.info("shared_state_available", what=what)
        return result
