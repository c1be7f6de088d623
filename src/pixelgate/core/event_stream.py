"""Following a generation's events as they are written (SSE routes, the Python API)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pixelgate.core.bus import EventBus
from pixelgate.core.models import TERMINAL, EventView
from pixelgate.core.ports import GenerationReads

__all__ = ["FINAL_EVENTS", "follow_events"]

#: the event types that end a generation's stream
FINAL_EVENTS = frozenset({"succeeded", "failed", "canceled"})


async def follow_events(
    store: GenerationReads,
    bus: EventBus,
    generation_id: str,
    *,
    after: int = 0,
    poll_s: float = 1.0,
    deadline: float | None = None,
    stop: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[EventView]:
    """The generation's events after ``after``, as they come, up to its final one.

    A stream opened after the end replays what is missing and ends. The bus wakes the
    reader; ``poll_s`` bounds a wait whose notification was lost.

    Args:
        deadline: a ``time.monotonic()`` time after which the stream ends early.
        stop: checked before each wait (a disconnected client); True ends the stream.
    """
    async with bus.subscribe(generation_id) as sub:
        while True:
            batch = await store.events_after(generation_id, after)
            for event in batch:
                after = event.id
                yield event
                if event.type in FINAL_EVENTS:
                    return
            if not batch:
                state = await store.status_of(generation_id)
                if state is None or state[0] in TERMINAL:
                    # ended without a final event after ``after``: nothing more will come
                    if not await store.events_after(generation_id, after):
                        return
                    continue
            if stop is not None and await stop():
                return
            wait = poll_s
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            await sub.wait(wait)
