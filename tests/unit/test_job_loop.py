"""The shared poll schedule of asynchronous provider jobs."""

from __future__ import annotations

from itertools import islice

from pixelgate.providers._jobs import poll_delays


def test_polls_back_off_from_the_interval_up_to_the_maximum() -> None:
    assert list(islice(poll_delays(2.0, 10.0), 6)) == [2.0, 3.0, 4.5, 6.75, 10.0, 10.0]


def test_a_maximum_below_the_interval_keeps_the_interval() -> None:
    assert list(islice(poll_delays(2.0, 1.0), 3)) == [2.0, 2.0, 2.0]
