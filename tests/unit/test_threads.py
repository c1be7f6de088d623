"""ThreadLane: blocking calls in threads, with the semantics of ``run_in_executor``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from pixelgate.threads import ThreadLane


@pytest.fixture
def lane() -> Iterator[ThreadLane]:
    lane = ThreadLane("test-lane")
    yield lane
    lane.close(wait=True)


def _pow(base: int, *, exp: int) -> int:
    return int(base**exp)


def _boom() -> None:
    raise ValueError("boom")


async def test_a_result_or_an_exception_reaches_the_caller(lane: ThreadLane) -> None:
    assert await lane.call(_pow, 3, exp=4) == 81
    with pytest.raises(ValueError, match="boom"):
        await lane.call(_boom)
    assert await lane.call(len, "still serving") == 13


async def test_one_thread_runs_the_calls_in_order(lane: ThreadLane) -> None:
    seen: list[tuple[int, int]] = []

    def note(index: int) -> None:
        seen.append((index, threading.get_ident()))

    await asyncio.gather(*(lane.call(note, i) for i in range(200)))
    assert [index for index, _ in seen] == list(range(200))
    assert len({ident for _, ident in seen}) == 1
    assert seen[0][1] != threading.get_ident()


async def test_many_threads_share_the_calls() -> None:
    lane = ThreadLane("test-pool", threads=2)
    gate = threading.Barrier(2, timeout=5)
    try:
        # two calls that can only both finish when two threads run them at once
        assert await asyncio.gather(lane.call(gate.wait), lane.call(gate.wait)) in ([0, 1], [1, 0])
        results = await asyncio.gather(*(lane.call(_pow, i, exp=2) for i in range(64)))
        assert results == [i * i for i in range(64)]
    finally:
        lane.close(wait=True)


async def test_a_call_cancelled_before_it_started_does_not_run(lane: ThreadLane) -> None:
    release = threading.Event()
    ran: list[str] = []
    blocker = asyncio.ensure_future(lane.call(release.wait, 5))
    queued = asyncio.ensure_future(lane.call(ran.append, "queued"))
    await asyncio.sleep(0.05)
    queued.cancel()
    release.set()
    assert await blocker is True
    assert await lane.call(ran.append, "after") is None
    assert ran == ["after"]


async def test_close_runs_what_was_queued_then_refuses() -> None:
    lane = ThreadLane("test-close")
    release = threading.Event()
    ran: list[int] = []
    first = asyncio.ensure_future(lane.call(release.wait, 5))
    second = asyncio.ensure_future(lane.call(ran.append, 2))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.to_thread(lane.close, wait=True)
    assert await first is True
    await second
    assert ran == [2]
    with pytest.raises(RuntimeError, match="closed"):
        await lane.call(ran.append, 3)


async def test_close_without_waiting_cancels_what_no_thread_took() -> None:
    lane = ThreadLane("test-abandon")
    release = threading.Event()
    first = asyncio.ensure_future(lane.call(release.wait, 5))
    second = asyncio.ensure_future(lane.call(len, "never"))
    await asyncio.sleep(0.05)
    lane.close(wait=False)
    release.set()
    assert await first is True
    with pytest.raises(asyncio.CancelledError):
        await second
