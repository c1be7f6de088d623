"""Outbound limits (concurrency gates, rate windows, provider pauses) and live configuration."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from pixelgate.config import OutboundLimit, load_settings
from pixelgate.errors import ValidationFailed
from pixelgate.providers.registry import build_providers
from pixelgate.resilience.outbound import OutboundLimiter, WaitInfo
from pixelgate.resilience.ratelimit import MemoryGates
from pixelgate.resilience.retry import Clock
from pixelgate.resilience.routing_control import RoutingControl, deep_merge


class FakeTime:
    """A clock whose sleep returns at once and moves the time on."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def clock(self) -> Clock:
        return Clock(now=self.now, sleep=self.sleep)


async def test_gates_are_first_come_first_served_and_follow_a_new_limit() -> None:
    gates = MemoryGates()
    order: list[int] = []
    assert await gates.try_acquire("k", 1)

    async def worker(i: int) -> None:
        await gates.acquire("k", 1)
        order.append(i)

    tasks = [asyncio.create_task(worker(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert await gates.usage("k") == (1, 3)
    await gates.release("k")
    await asyncio.sleep(0.01)
    assert order == [0]
    # a raised limit lets the waiters in first (this caller would jump the queue)
    assert not await gates.try_acquire("k", 3)
    await asyncio.sleep(0.01)
    assert order == [0, 1, 2]
    assert await gates.usage("k") == (3, 0)
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    gates = MemoryGates()
    assert await gates.try_acquire("k", 1)
    waiter = asyncio.create_task(gates.acquire("k", 1))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await gates.usage("k") == (1, 0)
    await gates.release("k")
    assert await gates.try_acquire("k", 1)


async def test_concurrency_limit_makes_calls_wait_and_says_why() -> None:
    limiter = OutboundLimiter({"p": OutboundLimit(concurrency=2)})
    waits: list[WaitInfo] = []
    active = 0
    peak = 0

    async def on_wait(info: WaitInfo) -> None:
        waits.append(info)

    async def call() -> None:
        nonlocal active, peak
        async with limiter.slot("p", "acct", on_wait=on_wait):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1

    await asyncio.gather(*(call() for _ in range(6)))
    assert peak == 2
    assert len(waits) == 4
    assert waits[0].kind == "concurrency" and "2 of 2 concurrent" in waits[0].reason
    assert (await limiter.usage("p"))["in_flight"] == 0


async def test_per_account_limits_are_separate_from_the_provider_limit() -> None:
    limiter = OutboundLimiter({"p": OutboundLimit(concurrency=10, account_concurrency=1)})
    peaks: dict[str, int] = {}
    active: dict[str, int] = {}

    async def call(account: str) -> None:
        async with limiter.slot("p", account):
            active[account] = active.get(account, 0) + 1
            peaks[account] = max(peaks.get(account, 0), active[account])
            await asyncio.sleep(0.01)
            active[account] -= 1

    await asyncio.gather(*(call(a) for a in ("x", "x", "x", "y", "y")))
    assert peaks == {"x": 1, "y": 1}
    # an account's own setting replaces the provider's per-account limit
    own = OutboundLimit(concurrency=2)
    peak = 0
    running = 0

    async def own_call() -> None:
        nonlocal peak, running
        async with limiter.slot("p", "z", account_limit=own):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(own_call() for _ in range(4)))
    assert peak == 2


async def test_a_rate_limit_spaces_calls_out_instead_of_failing() -> None:
    limiter = OutboundLimiter({"*": OutboundLimit(rate="2/second")})
    waits: list[WaitInfo] = []

    async def on_wait(info: WaitInfo) -> None:
        waits.append(info)

    started = time.monotonic()
    stamps: list[float] = []
    for _ in range(3):
        async with limiter.slot("any", "acct", on_wait=on_wait):
            stamps.append(time.monotonic() - started)
    assert stamps[1] < 0.5 and stamps[2] >= 0.9
    assert [w.kind for w in waits] == ["rate"]
    assert "2/second" in waits[0].reason


async def test_a_retry_after_pauses_every_call_to_that_provider() -> None:
    fake = FakeTime()
    limiter = OutboundLimiter(clock=fake.clock())
    await limiter.pause("p", 3.0)
    await limiter.pause("p", 1.0)  # a shorter pause does not shorten the longer one
    waits: list[WaitInfo] = []

    async def on_wait(info: WaitInfo) -> None:
        waits.append(info)

    async with limiter.slot("p", "acct", on_wait=on_wait):
        pass
    assert fake.slept == [3.0]
    assert waits[0].kind == "retry_after" and waits[0].retry_in_s == 3.0
    async with limiter.slot("other", "acct", on_wait=on_wait):
        pass
    assert fake.slept == [3.0]


async def test_an_unlimited_call_holds_nothing_until_a_limit_or_pause_comes() -> None:
    """The unlimited call's slot is a shared no-op (nothing to count or wait for); a
    limit configured, or a pause set, later still applies to the next call."""
    fake = FakeTime()
    limiter = OutboundLimiter(clock=fake.clock())
    free = limiter.slot("p", "acct")
    assert free is limiter.slot("q", "other")
    async with free:
        pass
    limiter.configure({"p": OutboundLimit(concurrency=1)})
    async with limiter.slot("p", "acct"):
        assert (await limiter.usage("p"))["in_flight"] == 1
        assert not await limiter.gates.try_acquire("p:p", 1)
    await limiter.pause("q", 2.0)
    async with limiter.slot("q", "acct"):
        pass
    assert fake.slept == [2.0]


# Live configuration ---------------------------------------------------------------------


def make_control(tmp_path: Any, **routing: Any) -> RoutingControl:
    settings = load_settings(
        data_dir=tmp_path,
        providers={"a": {"kind": "placeholder"}, "b": {"kind": "placeholder"}},
        routing={"default": ["a", "b"], **routing},
    )
    return RoutingControl(settings, build_providers(settings, httpx.AsyncClient()))


def test_deep_merge_merges_objects_and_replaces_the_rest() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    assert deep_merge(base, {"a": {"y": [3]}, "c": 3}) == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 3}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"routing": {"retry": {"attempts": 0}}}, "routing.retry.attempts"),
        ({"routing": {"default": ["nope"]}}, "routing.default"),
        ({"routing": {"providers": {"ghost": {"timeout_s": 3}}}}, "routing.providers"),
        ({"routing": {"outbound": {"a": {"rate": "lots"}}}}, "routing.outbound.a.rate"),
        ({"routing": {"policy": "cheapest"}}, "routing.policy"),
        ({"storage_url": "s3://x"}, "storage_url"),
    ],
)
def test_hot_configuration_is_validated_naming_the_field(
    tmp_path: Any, document: dict[str, Any], field: str
) -> None:
    control = make_control(tmp_path)
    with pytest.raises(ValidationFailed) as info:
        control.validate(document)
    assert info.value.field == field


def test_a_hot_configuration_overrides_the_file_and_keeps_the_rest(tmp_path: Any) -> None:
    control = make_control(tmp_path, retry={"attempts": 2, "base_delay_s": 0.5})
    routing = control.validate(
        {
            "routing": {
                "retry": {"attempts": 5},
                "providers": {"b": {"priority": 1, "timeout_s": 7, "attempts": 1}},
                "breaker": {"failure_threshold": 2},
                "outbound": {"a": {"concurrency": 3}},
            }
        }
    )
    assert control.retry_for("a").attempts == 2  # read before: the new one replaces it
    control.apply(routing, version=4, overrides={})
    assert control.chain() == ["b", "a"]
    assert control.retry_for("a").attempts == 5 and control.retry_for("a").base_delay_s == 0.5
    assert control.retry_for("b").attempts == 1
    assert control.timeout_for("b") == 7
    assert control.breakers.settings.failure_threshold == 2
    assert control.outbound.limit_for("a") == OutboundLimit(concurrency=3)


async def test_refresh_picks_up_a_version_stored_by_another_process(tmp_path: Any) -> None:
    class Source:
        version = 0
        data: dict[str, Any] = {}

        async def latest_config_version(self) -> int:
            return self.version

        async def latest_config(self) -> dict[str, Any] | None:
            return {"version": self.version, "data": self.data, "actor": "admin"}

    control = make_control(tmp_path)
    source = Source()
    control.source = source
    await control.refresh(force=True)
    assert control.version == 0
    source.version, source.data = 3, {"routing": {"default": ["b"]}}
    await control.refresh()  # checked a moment ago: not yet
    assert control.version == 0
    await control.refresh(force=True)
    assert control.version == 3 and control.chain() == ["b"]
    # a stored version that no longer validates (a provider gone from the file) is skipped
    source.version, source.data = 4, {"routing": {"default": ["gone"]}}
    await control.refresh(force=True)
    assert control.version == 3 and control.chain() == ["b"]


def test_latency_percentiles_follow_the_rolling_window_exactly() -> None:
    """The sorted latencies kept beside the window match a fresh sort of it, as attempts
    are evicted by count and expire by age."""
    import random

    from pixelgate.resilience.stats import AttemptStats, _percentile

    now = [0.0]
    window = 10.0  # 20 attempts' worth: expiry by age and by count both happen
    stats = AttemptStats(max_attempts=50, window_s=window, clock=lambda: now[0])
    rng = random.Random(7)
    kept: list[tuple[float, bool, float]] = []
    for i in range(400):
        now[0] += 0.5 if i < 200 else 0.1  # sparse (age evicts), then dense (count does)
        ok = rng.random() < 0.8
        latency = rng.uniform(10, 500)
        stats.record("p", ok=ok, latency_ms=latency, error=None if ok else "x")
        kept = [*kept, (now[0], ok, latency)][-50:]
        live = sorted(lat for at, good, lat in kept if good and at >= now[0] - window)
        for pct in (0.5, 0.9):
            expected = _percentile(live, pct) if len(live) >= 3 else None
            assert stats.latency_ms("p", pct) == expected
