"""Backoff with jitter that honours ``Retry-After``, and the overall deadline of a generation.

Both take their clock and sleep from a :class:`Clock`, so tests drive time by hand.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pixelgate.config import RetrySettings

__all__ = ["Clock", "Deadline", "RetryPolicy"]


@dataclass
class Clock:
    """Monotonic time and sleep; replace both in tests (a fake sleep advances a fake clock)."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter (seed 004: 1 s, 2 s, 4 s; three attempts)."""

    attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    jitter: float = 0.1
    #: a Retry-After longer than this is not waited out on the same provider
    max_retry_after_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(**settings.model_dump())

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

        The provider's ``retry_after`` is a floor: never retry sooner than it asked.
        """
        backoff = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        backoff *= 1 + random.uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            return max(backoff, retry_after)
        return backoff


@dataclass
class Deadline:
    """An overall time budget for one generation."""

    seconds: float
    clock: Clock = field(default_factory=Clock)
    started: float = -1.0

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock.now()

    def elapsed(self) -> float:
        return self.clock.now() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    async def sleep(self, delay: float) -> bool:
        """Sleep ``delay`` if the budget allows; False when it would pass the deadline."""
        if delay >= self.remaining():
            return False
        await self.clock.sleep(delay)
        return True
