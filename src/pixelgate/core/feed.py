"""Following every event of one account as it is written (the account-wide WebSocket).

Event ids increase, but with several writers (scale-out) a smaller id can commit after a
larger one was read. Besides reading on from the newest id it sent, the feed looks again
at the ids of the last :data:`LATE_COMMIT_S` seconds and sends any it had not seen yet,
remembering what it sent there so that nothing goes out twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pixelgate.core.models import EventView
from pixelgate.core.ports import GenerationReads

__all__ = ["LATE_COMMIT_S", "follow_account_events"]

#: longest time an event row may stay uncommitted after a larger id became visible
LATE_COMMIT_S = 5.0
#: events read per query
PAGE = 500
#: most events looked at again for late commits (the last LATE_COMMIT_S seconds' worth)
LATE_WINDOW = 5000


async def follow_account_events(
    store: GenerationReads,
    account_id: str,
    *,
    after: int,
    poll_s: float = 0.5,
    stop: Callable[[], Awaitable[bool]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[EventView]:
    """The account's events after ``after``, oldest first, until ``stop`` says so.

    Args:
        after: an event id; only later events are sent (``Last-Event-ID`` semantics).
        poll_s: pause between two reads that found nothing new.
        stop: checked between reads; True ends the feed.
    """
    high = floor = after
    sent: dict[int, float] = {}  # id → when it was sent, for ids above ``floor``
    while True:
        late: list[EventView] = []
        if floor < high:
            window = await store.account_events_after(
                account_id, floor, limit=LATE_WINDOW, up_to=high
            )
            late = [event for event in window if event.id not in sent]
        batch = await store.account_events_after(account_id, high, limit=PAGE)
        for event in [*late, *batch]:
            sent[event.id] = clock()
            yield event
        if batch:
            high = batch[-1].id
        floor = _advance(floor, sent, clock() - LATE_COMMIT_S)
        if len(batch) >= PAGE:
            continue  # a backlog: read on at once
        if stop is not None and await stop():
            return
        await asyncio.sleep(poll_s)


def _advance(floor: int, sent: dict[int, float], settled_before: float) -> int:
    """Raise the floor to the largest id sent before ``settled_before`` (anything smaller
    has committed by then) and forget the ids at or below it."""
    settled = [event_id for event_id, at in sent.items() if at <= settled_before]
    if not settled:
        return floor
    floor = max(floor, *settled)
    for event_id in [i for i in sent if i <= floor]:
        del sent[event_id]
    return floor
