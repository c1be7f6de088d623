"""The circuit breaker state machine, on a clock the tests move by hand.

Every test that takes ``make`` runs again on Redis (``tests/scaleout/test_breaker_redis.py``
overrides the fixture), so both implementations provably behave the same.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from pixelgate.config import BreakerSettings
from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)
from pixelgate.resilience.breaker import (
    Breakers,
    BreakerSnapshot,
    BreakerState,
    MemoryBreakers,
    Outcome,
    outcome_of,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


#: ``make(clock, **settings)``: breakers on that clock, threshold 3 in 60 s, cool-down 30 s
Make = Callable[..., Breakers]


def breaker_settings(**settings: object) -> BreakerSettings:
    base: dict[str, object] = {"failure_threshold": 3, "window_s": 60, "cooldown_s": 30}
    base.update(settings)
    return BreakerSettings.model_validate(base)


@pytest.fixture
def make() -> Make:
    def factory(clock: FakeClock, **settings: object) -> Breakers:
        return MemoryBreakers(breaker_settings(**settings), clock=clock, rng=random.Random(7))

    return factory


async def fail(breakers: Breakers, name: str = "a") -> list[object]:
    permit, _ = await breakers.allow(name)
    return list(await breakers.record(name, permit, Outcome.FAILURE, "provider_unavailable"))


async def state(breakers: Breakers, name: str = "a") -> BreakerState:
    return (await breakers.snapshots([name]))[name].state


async def test_opens_after_the_threshold_within_the_window(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock)
    assert await fail(breakers) == []
    assert await fail(breakers) == []
    [transition] = await fail(breakers)
    assert transition.to_state == BreakerState.OPEN  # type: ignore[attr-defined]
    assert "3 failures in 60 s" in transition.reason  # type: ignore[attr-defined]
    permit, _ = await breakers.allow("a")
    assert not permit.allowed and permit.retry_in_s is not None
    assert 27 <= permit.retry_in_s <= 33  # cool-down 30 s ± 10 %


async def test_failures_older_than_the_window_do_not_count(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock)
    await fail(breakers)
    await fail(breakers)
    clock.advance(61)
    assert await fail(breakers) == []
    assert await state(breakers) == BreakerState.CLOSED


async def test_successes_do_not_reset_a_count_threshold_but_feed_the_ratio(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock, failure_threshold=100, failure_ratio=0.5, min_calls=4)
    for outcome in (Outcome.SUCCESS, Outcome.FAILURE, Outcome.SUCCESS):
        permit, _ = await breakers.allow("a")
        await breakers.record("a", permit, outcome)
    assert await state(breakers) == BreakerState.CLOSED
    [transition] = await fail(breakers)
    assert "2 of 4 calls failed" in transition.reason  # type: ignore[attr-defined]


async def test_half_open_admits_k_probes_then_closes_when_they_succeed(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock, half_open_probes=2, cooldown_jitter=0)
    for _ in range(3):
        await fail(breakers)
    clock.advance(29.9)
    assert not (await breakers.allow("a"))[0].allowed
    clock.advance(0.2)
    first, transitions = await breakers.allow("a")
    assert first.allowed and first.probe
    assert [t.to_state for t in transitions] == [BreakerState.HALF_OPEN]
    second, _ = await breakers.allow("a")
    assert second.allowed and second.probe
    third, _ = await breakers.allow("a")
    assert not third.allowed  # only K probes at a time
    assert await breakers.record("a", first, Outcome.SUCCESS) == []
    [closed] = await breakers.record("a", second, Outcome.SUCCESS)
    assert closed.to_state == BreakerState.CLOSED
    permit, _ = await breakers.allow("a")
    assert permit.allowed and not permit.probe


async def test_a_failed_probe_opens_again_for_a_new_cool_down(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock, cooldown_jitter=0)
    for _ in range(3):
        await fail(breakers)
    clock.advance(30)
    probe, _ = await breakers.allow("a")
    [transition] = await breakers.record("a", probe, Outcome.FAILURE, "provider_timeout")
    assert transition.to_state == BreakerState.OPEN
    assert "probe failed" in transition.reason
    permit, _ = await breakers.allow("a")
    assert not permit.allowed and permit.retry_in_s == pytest.approx(30)
    snap = (await breakers.snapshots(["a"]))["a"]
    assert snap.opened_count == 2 and snap.last_failure == "provider_timeout"


async def test_a_neutral_probe_frees_its_slot_without_deciding(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock, cooldown_jitter=0)
    for _ in range(3):
        await fail(breakers)
    clock.advance(30)
    probe, _ = await breakers.allow("a")
    assert not (await breakers.allow("a"))[0].allowed
    assert await breakers.record("a", probe, Outcome.NEUTRAL) == []
    again, _ = await breakers.allow("a")
    assert again.allowed and again.probe
    assert await state(breakers) == BreakerState.HALF_OPEN


async def test_results_of_calls_admitted_before_a_state_change_are_ignored(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock)
    early, _ = await breakers.allow("a")  # in flight while the breaker opens
    for _ in range(3):
        await fail(breakers)
    assert await breakers.record("a", early, Outcome.SUCCESS) == []
    assert await state(breakers) == BreakerState.OPEN


async def test_reset_closes_and_clears(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock)
    for _ in range(3):
        await fail(breakers)
    [transition] = await breakers.reset("a")
    assert transition.reason == "reset by an admin"
    assert await state(breakers) == BreakerState.CLOSED
    assert (await breakers.snapshots(["a"]))["a"].failures == 0
    assert await breakers.reset("a") == []


async def test_breakers_are_per_provider_and_can_be_disabled(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock)
    for _ in range(3):
        await fail(breakers, "a")
    assert await state(breakers, "b") == BreakerState.CLOSED
    assert (await breakers.allow("b"))[0].allowed
    breakers.configure(BreakerSettings(enabled=False))
    assert (await breakers.allow("a"))[0].allowed


async def test_new_thresholds_apply_to_the_next_call(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock)
    await fail(breakers)
    breakers.configure(BreakerSettings(failure_threshold=2))
    [transition] = await fail(breakers)
    assert transition.to_state == BreakerState.OPEN  # type: ignore[attr-defined]


async def test_snapshots_show_the_window_the_probes_and_the_timings(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock, cooldown_jitter=0)
    permit, _ = await breakers.allow("a")
    await breakers.record("a", permit, Outcome.SUCCESS)
    for _ in range(3):
        await fail(breakers)
    clock.advance(10)
    snaps = await breakers.snapshots(["a", "b"])
    a = snaps["a"]
    assert (a.state, a.failures, a.calls, a.opened_count) == (BreakerState.OPEN, 3, 4, 1)
    assert a.retry_in_s == pytest.approx(20) and a.open_for_s == pytest.approx(10)
    assert a.last_failure == "provider_unavailable" and a.probes_in_flight == 0
    assert snaps["b"] == BreakerSnapshot("b", BreakerState.CLOSED, 0, 0)
    clock.advance(20)
    await breakers.allow("a")
    a = (await breakers.snapshots(["a"]))["a"]
    assert (a.state, a.probes_in_flight, a.retry_in_s) == (BreakerState.HALF_OPEN, 1, None)
    assert a.open_for_s == pytest.approx(30)
    clock.advance(31)  # the calls leave the window
    assert (await breakers.snapshots(["a"]))["a"].calls == 0


async def test_half_open_admits_no_more_than_k_probes_in_all(make: Make) -> None:
    clock = FakeClock()
    breakers = make(clock, cooldown_jitter=0, half_open_probes=2)
    for _ in range(3):
        await fail(breakers)
    clock.advance(30)
    permits = [(await breakers.allow("a"))[0] for _ in range(5)]
    assert [p.allowed for p in permits] == [True, True, False, False, False]
    # a success frees its slot but counts towards closing: still K in all
    assert await breakers.record("a", permits[0], Outcome.SUCCESS) == []
    assert not (await breakers.allow("a"))[0].allowed


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, Outcome.SUCCESS),
        (Transient("x", status_code=503), Outcome.FAILURE),
        (ProviderTimeout("x"), Outcome.FAILURE),
        (ProviderError("x", status_code=500), Outcome.FAILURE),
        (ProviderError("x"), Outcome.FAILURE),
        (Refused("x"), Outcome.SUCCESS),
        (InvalidRequest("x", status_code=400), Outcome.SUCCESS),
        (ProviderRateLimited("x", retry_after=3, status_code=429), Outcome.NEUTRAL),
        (ProviderAuthError("x", status_code=401), Outcome.NEUTRAL),
    ],
)
def test_only_transient_errors_timeouts_and_5xx_count(
    error: BaseException | None, outcome: Outcome
) -> None:
    assert outcome_of(error) == outcome
