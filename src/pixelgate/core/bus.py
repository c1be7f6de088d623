"""Event fan-out: wakes SSE streams, synchronous waiters and idle workers.

The database stays the truth; a notification only says "look again". The
in-process bus serves the embedded deployment; a Redis bus implements the same
protocol for scale-out.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

__all__ = ["EventBus", "MemoryBus", "Subscription"]


class Subscription:
    """Notifications for one generation; ``wait`` returns early when one arrives."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.cancel_requested = False
        #: a notification since the last ``wait`` may have been the final one (a terminal
        #: state, or a reconnect after which anything may have happened): look again
        self.maybe_final = False

    def notify(self, *, final: bool = True) -> None:
        self.maybe_final = self.maybe_final or final
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True


class EventBus(Protocol):
    async def publish(self, generation_id: str, *, final: bool = False) -> None:
        """Something happened to this generation (an event row was written); ``final``:
        it reached a terminal state (synchronous waiters read it only then)."""

    def subscribe(self, generation_id: str) -> AbstractAsyncContextManager[Subscription]:
        """Receive notifications for one generation while the context is open."""

    async def notify_jobs(self) -> None:
        """New runnable jobs exist: wake idle workers."""

    async def wait_for_jobs(self, timeout: float) -> None:
        """Sleep until ``notify_jobs`` or the timeout."""

    async def request_cancel(self, generation_id: str) -> None:
        """Ask whichever worker runs the generation to cancel it now."""

    def on_cancel(self, generation_id: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when cancellation of ``generation_id``, a job this
        worker runs, is asked for: no task or event waits per running job."""

    def forget_cancel(self, generation_id: str) -> None: ...

    async def close(self) -> None: ...


class MemoryBus:
    """Process-local bus for the embedded deployment."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._jobs = asyncio.Event()
        self._cancels: dict[str, Callable[[], None]] = {}

    async def publish(self, generation_id: str, *, final: bool = False) -> None:
        for sub in self._subs.get(generation_id, ()):
            sub.notify(final=final)

    @asynccontextmanager
    async def subscribe(self, generation_id: str) -> AsyncIterator[Subscription]:
        sub = Subscription()
        self._subs[generation_id].add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(generation_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[generation_id]

    async def notify_jobs(self) -> None:
        self._jobs.set()

    async def wait_for_jobs(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._jobs.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._jobs.clear()

    async def request_cancel(self, generation_id: str) -> None:
        callback = self._cancels.pop(generation_id, None)
        if callback is not None:
            callback()

    def on_cancel(self, generation_id: str, callback: Callable[[], None]) -> None:
        self._cancels[generation_id] = callback

    def forget_cancel(self, generation_id: str) -> None:
        self._cancels.pop(generation_id, None)

    async def close(self) -> None:
        self._subs.clear()
