"""Group commit of running jobs' events (core/event_writer.py)."""

from __future__ import annotations

import asyncio

from pixelgate.core.event_writer import FLUSH_BATCH, EventBuffer
from pixelgate.db.store import RunningEvent
from tests.fakes import ManualClock


class Recorder:
    def __init__(self) -> None:
        self.writes: list[list[RunningEvent]] = []
        self.announced: list[str] = []

    async def write(self, events: list[RunningEvent]) -> list[str]:
        self.writes.append(list(events))
        return [e.generation_id for e in events]

    async def announce(self, generation_id: str) -> None:
        self.announced.append(generation_id)


def _event(gen: str, n: int) -> RunningEvent:
    return RunningEvent(gen, "progress", {"progress": n}, {"progress": n})


async def test_events_of_many_jobs_are_written_together_once_per_interval() -> None:
    rec = Recorder()
    clock = ManualClock()
    buffer = EventBuffer(0.05, rec.write, rec.announce, clock=clock)
    for n in range(3):
        await buffer.add(_event("gen_a", n))
        await buffer.add(_event("gen_b", n))
    await clock.advance(0.049)
    assert rec.writes == [] and buffer.waiting == 6
    await clock.advance(0.002)
    assert len(rec.writes) == 1 and len(rec.writes[0]) == 6
    # in the order reported, and each generation announced once per write
    assert [e.data["progress"] for e in rec.writes[0] if e.generation_id == "gen_a"] == [0, 1, 2]
    assert sorted(rec.announced) == ["gen_a", "gen_b"]
    await buffer.close()


async def test_a_finishing_job_takes_its_own_waiting_events() -> None:
    rec = Recorder()
    buffer = EventBuffer(10.0, rec.write, rec.announce)
    await buffer.add(_event("gen_a", 1))
    await buffer.add(_event("gen_b", 1))
    await buffer.add(_event("gen_a", 2))
    taken = await buffer.take("gen_a")
    assert [e.data["progress"] for e in taken] == [1, 2]
    assert await buffer.take("gen_a") == [] and buffer.waiting == 1
    await buffer.close()  # shutdown writes what is left
    assert [[e.generation_id for e in w] for w in rec.writes] == [["gen_b"]]


async def test_a_finishing_job_waits_for_the_flush_writing_its_events() -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    rec = Recorder()

    async def slow_write(events: list[RunningEvent]) -> list[str]:
        started.set()
        await release.wait()
        return await rec.write(events)

    buffer = EventBuffer(10.0, slow_write, rec.announce)
    await buffer.add(_event("gen_b", 1))
    await buffer.add(_event("gen_a", 1))
    flushing = asyncio.create_task(buffer.flush())
    while not started.is_set():  # the flush is inside its write
        await started.wait()
    taking = asyncio.create_task(buffer.take("gen_a"))
    for _ in range(20):  # turns of the loop, not time: take is blocked on the flush
        await asyncio.sleep(0)
    assert not taking.done()  # gen_a's event is being written: its finish must wait
    release.set()
    assert await taking == [] and (await flushing) is None
    # written in one transaction, rows in id order, each job's own order kept
    assert [e.generation_id for e in rec.writes[0]] == ["gen_a", "gen_b"]
    await buffer.close()


async def test_interval_zero_writes_each_event_at_once() -> None:
    rec = Recorder()
    buffer = EventBuffer(0, rec.write, rec.announce)
    await buffer.add(_event("gen_a", 1))
    assert len(rec.writes) == 1 and rec.announced == ["gen_a"] and buffer.waiting == 0


async def test_a_large_flush_is_split_into_bounded_transactions() -> None:
    rec = Recorder()
    buffer = EventBuffer(10.0, rec.write, rec.announce)
    for n in range(FLUSH_BATCH + 7):
        await buffer.add(_event(f"gen_{n}", n))
    await buffer.flush()
    assert [len(w) for w in rec.writes] == [FLUSH_BATCH, 7]
    await buffer.close()
