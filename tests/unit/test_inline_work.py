"""Small blocking work on the event loop, until it is slow once (media/cpu.InlineWork)."""

from __future__ import annotations

import time

import pytest

from pixelgate.media import cpu
from pixelgate.media.cpu import InlineWork


def test_quick_work_stays_allowed_and_returns_its_value() -> None:
    inline = InlineWork(slow_s=1.0)
    assert [inline.run(pow, 2, n) for n in range(3)] == [1, 2, 4]
    assert inline.allowed()


def test_slow_work_pauses_inline_work_for_the_pause_then_allows_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(cpu.time, "monotonic", lambda: now[0])
    inline = InlineWork(slow_s=0.001, pause_s=30.0)
    inline.run(time.sleep, 0.005)
    assert not inline.allowed()
    now[0] += 29.9
    assert not inline.allowed()
    now[0] += 0.2
    assert inline.allowed()


def test_work_that_raises_is_timed_too() -> None:
    inline = InlineWork(slow_s=0.0)

    def fail() -> None:
        raise OSError("disk")

    with pytest.raises(OSError):
        inline.run(fail)
    assert not inline.allowed()
