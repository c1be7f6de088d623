"""Group commit of the events of running jobs.

A running job reports what happens to it (``provider_selected``, ``progress``,
``waiting``, ``retrying``...) as events. Written one by one, each is a transaction of
its own, and with thousands of jobs in flight those transactions were most of a
worker's database time. Here they wait up to ``interval_s`` and are written together
in one transaction per flush, and the job's finishing transaction takes whatever of
its own is still waiting, so a quick job writes them with its result at no extra cost.

Order is kept: a job's events are written in the order they were reported, and always
before its final event. An event can only land while its job is ``PROCESSING`` (the
store checks), so none arrives after the end. Locks: a flush locks the rows of its jobs
in id order, and a finishing job whose events are being flushed waits for that flush
before its own transaction, so the two never wait on each other (PostgreSQL would
abort one as a deadlock). What a crash loses is at most
``interval_s`` of such reports; the job's state and money are in other transactions.
``interval_s`` 0 writes every event at once (the behaviour before group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from pixelgate.core.records import RunningEvent
from pixelgate.resilience.retry import Clock

__all__ = ["EventBuffer"]

log = structlog.get_logger("pixelgate.events")

#: events per write transaction, about (a job's are never split): keeps one flush from
#: holding the write lock for long
FLUSH_BATCH = 500

#: writes events and returns the generation ids that got one (``Store.add_running_events``)
Write = Callable[[list[RunningEvent]], Awaitable[list[str]]]
#: tells listeners that a generation has new events (``EventBus.publish``)
Announce = Callable[[str], Awaitable[None]]


class EventBuffer:
    """Holds running jobs' events for at most ``interval_s``, then writes them together."""

    def __init__(
        self, interval_s: float, write: Write, announce: Announce, *, clock: Clock | None = None
    ) -> None:
        self.interval_s = interval_s
        #: its ``sleep`` times the flushes (a test moves a manual clock instead of waiting)
        self.clock = clock or Clock()
        self._write = write
        self._announce = announce
        #: waiting events by job, each job's in the order reported (a finishing job takes
        #: its own without walking everyone's: thousands of jobs report at once)
        self._pending: dict[str, list[RunningEvent]] = {}
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None
        #: generation ids of the flush being written, and its end
        self._flushing: set[str] = set()
        self._flushed = asyncio.Event()

    async def add(self, event: RunningEvent) -> None:
        """Report ``event``: written within ``interval_s`` (at once when it is 0)."""
        if self.interval_s <= 0:
            await self._flush([event])
            return
        self._pending.setdefault(event.generation_id, []).append(event)
        self._waiting += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def take(self, generation_id: str) -> list[RunningEvent]:
        """Remove and return the waiting events of one job (its finishing transaction
        writes them before its final event), after any flush writing some of them."""
        while generation_id in self._flushing:
            await self._flushed.wait()
        mine = self._pending.pop(generation_id, [])
        self._waiting -= len(mine)
        return mine

    @property
    def waiting(self) -> int:
        return self._waiting

    async def close(self) -> None:
        """Write what is waiting and stop (shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def flush(self) -> None:
        """Write everything waiting now."""
        while self._pending:
            batch: list[RunningEvent] = []
            while self._pending and len(batch) < FLUSH_BATCH:  # whole jobs, oldest first
                batch += self._pending.pop(next(iter(self._pending)))
            self._waiting -= len(batch)
            self._flushing = {e.generation_id for e in batch}
            self._flushed.clear()
            try:
                await self._flush(batch)
            finally:
                self._flushing = set()
                self._flushed.set()

    async def _run(self) -> None:
        while self._pending:
            await self.clock.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception:  # the next flush goes on; these events are lost, not the jobs
                log.exception("event_flush_failed")

    async def _flush(self, events: list[RunningEvent]) -> None:
        # one job's events keep their order (a stable sort); rows are locked in id order
        written = await self._write(sorted(events, key=lambda e: e.generation_id))
        for generation_id in dict.fromkeys(written):
            await self._announce(generation_id)
