"""Simulated progress for providers that report none of their own (seed 002).

While an attempt runs and its provider has said nothing, the job's progress follows an
estimated curve: from where the job stands towards :data:`CEILING`, covering most of
the way by the provider's expected latency, never reaching it. One ticker task serves
every running attempt of the process: once per interval it computes every tracked
attempt's value and hands them to ``emit`` in batches (one write each). Thousands of
waiting jobs cost one task and a few writes per interval, not a task or a write each.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from pixelgate.resilience.retry import Clock

__all__ = ["CEILING", "JobProgress", "ProgressTicker", "Tracker", "simulated_percent"]

log = structlog.get_logger("pixelgate.progress")

#: simulated progress stays below this; only the result brings 100
CEILING = 95
#: share of the way covered at the expected latency is 1 - e^-STEEPNESS (78 %)
STEEPNESS = 1.5
#: an attempt younger than this share of the interval waits for the next tick (most
#: fast answers then never cost a write)
MIN_AGE = 0.5

#: values per ``emit`` call: a tick of many jobs is written in a few short transactions,
#: so it never holds the (SQLite) write lock for long
EMIT_BATCH = 500

#: receives ``(generation id, percent)`` pairs of one tick
Emit = Callable[[list[tuple[str, int]]], Awaitable[None]]


def simulated_percent(elapsed_s: float, expected_s: float, start: int = 0) -> int:
    """The estimate ``elapsed_s`` into an attempt expected to take ``expected_s``.

    Rises from ``start`` towards :data:`CEILING` and never reaches it.
    """
    start = max(0, min(start, CEILING - 1))
    share = 1 - math.exp(-STEEPNESS * max(0.0, elapsed_s) / max(expected_s, 1e-3))
    return min(CEILING - 1, start + int((CEILING - start) * share))


@dataclass(eq=False)
class JobProgress:
    """The progress one job showed last: where the next estimate starts from."""

    percent: int = 0

    def reported(self, percent: int) -> None:
        """A provider's own figure: the next estimate starts from there."""
        self.percent = max(self.percent, min(percent, CEILING - 1))


@dataclass(eq=False)
class Tracker:
    """One attempt's simulation; :meth:`stop` it on real progress or when it ends."""

    generation_id: str
    job: JobProgress
    expected_s: float
    started: float
    start: int
    active: bool = field(default=True)

    def stop(self) -> None:
        self.active = False


class ProgressTicker:
    """Emits simulated progress for every tracked attempt once per ``interval_s``
    (``interval_s`` 0 turns it off); racing attempts of one job send one value."""

    def __init__(self, interval_s: float, emit: Emit, *, clock: Clock | None = None) -> None:
        self.interval_s = interval_s
        self._emit = emit
        #: time and the wait between ticks (a test moves a manual clock instead of waiting)
        self.clock = clock or Clock()
        self._trackers: list[Tracker] = []
        self._task: asyncio.Task[None] | None = None

    def track(self, generation_id: str, job: JobProgress, expected_s: float) -> Tracker | None:
        """Start simulating an attempt that has just begun; None when turned off."""
        if self.interval_s <= 0:
            return None
        tracker = Tracker(generation_id, job, expected_s, self.clock.now(), job.percent)
        self._trackers.append(tracker)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return tracker

    @property
    def tracked(self) -> int:
        """Attempts still simulated (stopped ones leave at the next tick)."""
        return sum(1 for t in self._trackers if t.active)

    async def close(self) -> None:
        """Stop the ticker task (shutdown); tracked attempts are forgotten."""
        self._trackers.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while self._trackers:
            await self.clock.sleep(self.interval_s)
            values = self._collect(self.clock.now())
            for start in range(0, len(values), EMIT_BATCH):
                batch = values[start : start + EMIT_BATCH]
                try:
                    await self._emit(batch)
                except Exception:  # the ticker outlives a failed write; the next tick goes on
                    log.exception("simulated_progress_failed", jobs=len(batch))

    def _collect(self, now: float) -> list[tuple[str, int]]:
        """This tick's values, one per job; stopped trackers are dropped."""
        self._trackers = [t for t in self._trackers if t.active]
        values: dict[int, tuple[Tracker, int]] = {}
        for tracker in self._trackers:
            age = now - tracker.started
            if age < self.interval_s * MIN_AGE:
                continue
            percent = simulated_percent(age, tracker.expected_s, tracker.start)
            best = values.get(id(tracker.job))
            if percent > tracker.job.percent and (best is None or percent > best[1]):
                values[id(tracker.job)] = (tracker, percent)
        for tracker, percent in values.values():
            tracker.job.percent = percent
        return [(tracker.generation_id, percent) for tracker, percent in values.values()]
