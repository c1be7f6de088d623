"""The account-wide event feed: late commits below the newest id are sent, once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pixelgate.core import feed
from pixelgate.core.feed import follow_account_events
from pixelgate.core.models import EventView


class FakeEventStore:
    """``account_events_after`` over a list the test changes between reads."""

    def __init__(self) -> None:
        self.visible: list[EventView] = []
        self.reads = 0

    def add(self, event_id: int, account: str = "acct_a") -> None:
        self.visible.append(
            EventView(event_id, f"gen_{account}", "progress", {}, datetime.now(UTC))
        )

    async def account_events_after(
        self, account_id: str, after_id: int, *, limit: int, up_to: int | None = None
    ) -> list[EventView]:
        self.reads += 1
        rows = sorted(
            (e for e in self.visible if e.generation_id == f"gen_{account_id}"),
            key=lambda e: e.id,
        )
        rows = [e for e in rows if e.id > after_id and (up_to is None or e.id <= up_to)]
        return rows[:limit]


async def test_a_late_committed_event_is_sent_once_and_nothing_twice(monkeypatch: Any) -> None:
    monkeypatch.setattr(feed, "PAGE", 2)  # the first read is a backlog of two pages
    store = FakeEventStore()
    for event_id in (3, 4, 5):
        store.add(event_id)
    store.add(6, account="acct_b")
    ticks = 0

    async def between_reads() -> bool:
        nonlocal ticks
        ticks += 1
        if ticks == 1:
            store.add(1)  # before the resume point: never sent
            store.add(2)  # the resume point itself: never sent
            store.add(8)
        elif ticks == 2:
            store.add(7)  # committed after 8 was read: still sent
        return ticks > 3

    got = [
        event.id
        async for event in follow_account_events(
            store,  # type: ignore[arg-type]
            "acct_a",
            after=2,
            poll_s=0,
            stop=between_reads,
        )
    ]
    assert got == [3, 4, 5, 8, 7]
