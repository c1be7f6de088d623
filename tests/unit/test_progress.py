"""Simulated progress: the estimated curve and the one ticker that serves every attempt."""

from __future__ import annotations

import pytest

from pixelgate.core.progress import (
    CEILING,
    JobProgress,
    ProgressTicker,
    simulated_percent,
)
from tests.fakes import ManualClock

INTERVAL = 0.02


def _ticker(recorder: Recorder) -> tuple[ProgressTicker, ManualClock]:
    clock = ManualClock()
    return ProgressTicker(INTERVAL, recorder, clock=clock), clock


class Recorder:
    """The ticker's ``emit``: keeps every batch."""

    def __init__(self, fail_first: bool = False) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.fail_first = fail_first

    async def __call__(self, values: list[tuple[str, int]]) -> None:
        self.batches.append(values)
        if self.fail_first and len(self.batches) == 1:
            raise RuntimeError("database is locked")

    def values(self, generation_id: str) -> list[int]:
        return [p for batch in self.batches for gen, p in batch if gen == generation_id]


def test_curve_rises_from_the_start_and_stays_below_the_ceiling() -> None:
    values = [simulated_percent(t / 10, expected_s=2.0, start=10) for t in range(0, 400)]
    assert values[0] == 10
    assert values == sorted(values)
    assert max(values) == CEILING - 1 < 100
    # most of the way is covered by the expected latency
    assert 70 <= simulated_percent(2.0, expected_s=2.0) <= 80


def test_a_start_at_or_above_the_ceiling_is_held_below_it() -> None:
    assert simulated_percent(100.0, expected_s=1.0, start=99) == CEILING - 1


async def test_turned_off_tracks_nothing() -> None:
    recorder = Recorder()
    clock = ManualClock()
    ticker = ProgressTicker(0, recorder, clock=clock)
    assert ticker.track("gen_a", JobProgress(), 1.0) is None
    await clock.advance(INTERVAL * 3)
    assert recorder.batches == [] and ticker.tracked == 0 and clock.sleepers == 0


async def test_values_rise_once_per_interval_until_stopped() -> None:
    recorder = Recorder()
    ticker, clock = _ticker(recorder)
    job = JobProgress()
    tracker = ticker.track("gen_a", job, expected_s=0.2)
    assert tracker is not None
    await clock.advance(INTERVAL * 6.5)
    tracker.stop()
    sent = recorder.values("gen_a")
    assert len(sent) == 6  # one value per tick
    assert sent == sorted(set(sent)) and sent[-1] < CEILING
    assert job.percent == sent[-1]
    await clock.advance(INTERVAL * 3)
    assert recorder.values("gen_a") == sent  # nothing after stop
    assert ticker.tracked == 0
    await ticker.close()


async def test_all_jobs_share_one_write_per_tick_and_racers_send_one_value() -> None:
    recorder = Recorder()
    ticker, clock = _ticker(recorder)
    raced = JobProgress()
    trackers = [
        ticker.track("gen_a", raced, expected_s=0.1),
        ticker.track("gen_a", raced, expected_s=0.1),
        ticker.track("gen_b", JobProgress(), expected_s=0.1),
    ]
    await clock.advance(INTERVAL * 4.5)
    for tracker in trackers:
        assert tracker is not None
        tracker.stop()
    assert len(recorder.batches) == 4  # one write per tick for all three
    for batch in recorder.batches:
        ids = [gen for gen, _ in batch]
        assert len(ids) == len(set(ids))
    assert {gen for gen, _ in recorder.batches[0]} == {"gen_a", "gen_b"}
    await ticker.close()


async def test_a_retry_continues_from_the_last_value() -> None:
    recorder = Recorder()
    ticker, clock = _ticker(recorder)
    job = JobProgress()
    first = ticker.track("gen_a", job, expected_s=0.5)
    await clock.advance(INTERVAL * 3.5)
    assert first is not None
    first.stop()
    reached = job.percent
    assert reached > 0
    second = ticker.track("gen_a", job, expected_s=0.5)
    await clock.advance(INTERVAL * 2.5)
    assert second is not None
    second.stop()
    sent = recorder.values("gen_a")
    assert sent == sorted(set(sent)) and sent[-1] > reached
    await ticker.close()


async def test_real_progress_raises_the_floor() -> None:
    job = JobProgress()
    job.reported(40)
    job.reported(20)
    assert job.percent == 40
    job.reported(100)
    assert job.percent == CEILING - 1


async def test_a_failed_write_does_not_stop_the_ticker() -> None:
    recorder = Recorder(fail_first=True)
    ticker, clock = _ticker(recorder)
    tracker = ticker.track("gen_a", JobProgress(), expected_s=1.0)
    await clock.advance(INTERVAL * 2.5)
    assert tracker is not None
    tracker.stop()
    assert len(recorder.batches) >= 2
    await ticker.close()


async def test_close_forgets_everything() -> None:
    recorder = Recorder()
    ticker, clock = _ticker(recorder)
    ticker.track("gen_a", JobProgress(), expected_s=0.1)
    await ticker.close()
    await clock.advance(INTERVAL * 2)
    assert recorder.batches == [] and ticker.tracked == 0


@pytest.mark.parametrize("expected_s", [0.0, -1.0])
def test_a_zero_expected_latency_does_not_divide_by_zero(expected_s: float) -> None:
    assert simulated_percent(1.0, expected_s) == CEILING - 1


async def test_a_tick_of_many_jobs_is_written_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pixelgate.core.progress.EMIT_BATCH", 4)
    recorder = Recorder()
    ticker, clock = _ticker(recorder)
    trackers = [ticker.track(f"gen_{i}", JobProgress(), expected_s=1.0) for i in range(10)]
    await clock.advance(INTERVAL * 1.5)
    for tracker in trackers:
        assert tracker is not None
        tracker.stop()
    first_tick = recorder.batches[:3]
    assert [len(batch) for batch in first_tick] == [4, 4, 2]
    assert sorted(gen for batch in first_tick for gen, _ in batch) == sorted(
        f"gen_{i}" for i in range(10)
    )
    await ticker.close()
