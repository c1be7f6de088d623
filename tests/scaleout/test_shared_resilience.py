"""Breakers, concurrency gates, rate windows and Retry-After pauses shared through Redis.

Each "process" is an instance with a Redis client of its own (as two processes would
have); the killed holder is a real subprocess. The last test runs two runtimes on one
PostgreSQL and Redis: a breaker opened by failures in one makes the other route around
the provider.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from pixelgate.api.app import create_app
from pixelgate.config import BreakerSettings, load_settings
from pixelgate.resilience.breaker import BreakerState, Outcome
from pixelgate.resilience.breaker_redis import RedisBreakers
from pixelgate.resilience.counters import open_limits_storage
from pixelgate.resilience.gates_redis import RedisGates
from pixelgate.resilience.inbound import RequestLimiter
from pixelgate.resilience.outbound import OutboundLimiter, WaitInfo
from pixelgate.resilience.pauses import RedisPauses
from pixelgate.resilience.ratelimit import RateWindows
from pixelgate.resilience.shared import open_shared_state
from pixelgate.runtime import Runtime
from tests.scaleout.services import PgDatabase, free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "pg_shared_test_admin_key_0123456789"
GATE = "p:shared"


@asynccontextmanager
async def gates_pair(
    clients: Callable[[], Redis], prefix: str, **options: Any
) -> AsyncIterator[tuple[RedisGates, RedisGates]]:
    a = RedisGates(clients(), prefix=prefix, **options)
    b = RedisGates(clients(), prefix=prefix, **options)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


# Circuit breakers -----------------------------------------------------------------------


async def test_failures_in_one_process_open_the_breaker_for_the_other(
    clients: Callable[[], Redis], prefix: str
) -> None:
    settings = BreakerSettings(failure_threshold=3, cooldown_s=0.3, cooldown_jitter=0)
    one = RedisBreakers(clients(), prefix=prefix, settings=settings)
    two = RedisBreakers(clients(), prefix=prefix, settings=settings)
    for breakers in (one, two, one):
        permit, _ = await breakers.allow("p")
        transitions = await breakers.record("p", permit, Outcome.FAILURE, "provider_timeout")
    assert [(t.from_state, t.to_state) for t in transitions] == [
        (BreakerState.CLOSED, BreakerState.OPEN)
    ]
    permit, _ = await two.allow("p")
    assert not permit.allowed and permit.state == BreakerState.OPEN
    snap = (await two.snapshots(["p"]))["p"]
    assert (snap.state, snap.failures, snap.opened_count) == (BreakerState.OPEN, 3, 1)
    assert snap.last_failure == "provider_timeout"


async def test_half_open_admits_k_probes_across_processes_and_reset_closes_for_all(
    clients: Callable[[], Redis], prefix: str
) -> None:
    settings = BreakerSettings(
        failure_threshold=1, cooldown_s=0.2, cooldown_jitter=0, half_open_probes=2
    )
    processes = [RedisBreakers(clients(), prefix=prefix, settings=settings) for _ in range(3)]
    permit, _ = await processes[0].allow("p")
    await processes[0].record("p", permit, Outcome.FAILURE)
    await asyncio.sleep(0.25)
    # ten callers at once, spread over three processes: two probes in all
    answers = await asyncio.gather(*(processes[i % 3].allow("p") for i in range(10)))
    probes = [p for p, _ in answers if p.allowed]
    assert len(probes) == 2 and all(p.probe for p in probes)
    moved = [t for _, ts in answers for t in ts]
    assert [(t.from_state, t.to_state) for t in moved] == [
        (BreakerState.OPEN, BreakerState.HALF_OPEN)
    ]
    # an admin reset through one process closes it for every process
    [reset] = await processes[2].reset("p")
    assert reset.from_state == BreakerState.HALF_OPEN
    for breakers in processes:
        permit, _ = await breakers.allow("p")
        assert permit.allowed and permit.state == BreakerState.CLOSED and not permit.probe
    # the probes' late results belong to an older epoch: ignored
    assert await processes[1].record("p", probes[0], Outcome.FAILURE) == []
    assert (await processes[0].snapshots(["p"]))["p"].state == BreakerState.CLOSED


# Concurrency gates ----------------------------------------------------------------------


async def test_a_cap_of_2_holds_10_holders_in_two_processes_to_2_at_once(
    clients: Callable[[], Redis], prefix: str
) -> None:
    async with gates_pair(clients, prefix) as (a, b):
        active = peak = 0

        async def holder(gates: RedisGates) -> None:
            nonlocal active, peak
            await gates.acquire(GATE, 2)
            try:
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.05)
                active -= 1
            finally:
                await gates.release(GATE)

        started = time.monotonic()
        await asyncio.gather(*(holder(a if i % 2 else b) for i in range(10)))
        elapsed = time.monotonic() - started
        assert peak == 2
        assert elapsed < 1.5, f"waiters were slow to take freed slots: {elapsed:.2f} s"
        assert await a.usage(GATE) == (0, 0)


async def test_waiters_in_two_processes_are_served_in_arrival_order(
    clients: Callable[[], Redis], prefix: str
) -> None:
    async with gates_pair(clients, prefix) as (a, b):
        assert await a.try_acquire(GATE, 1)
        order: list[int] = []

        async def waiter(i: int, gates: RedisGates) -> None:
            await gates.acquire(GATE, 1)
            order.append(i)
            await asyncio.sleep(0.01)
            await gates.release(GATE)

        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(waiter(i, b if i % 2 else a)))
            await eventually(lambda n=i + 1: _waiting(a, n))  # type: ignore[misc]
        assert not await b.try_acquire(GATE, 1)  # nobody jumps the queue
        await a.release(GATE)
        await asyncio.gather(*tasks)
        assert order == list(range(6))


async def _waiting(gates: RedisGates, count: int) -> bool:
    return (await gates.usage(GATE))[1] == count


async def test_a_raised_limit_lets_the_waiters_of_every_process_in(
    clients: Callable[[], Redis], prefix: str
) -> None:
    async with gates_pair(clients, prefix) as (a, b):
        assert await a.try_acquire(GATE, 1)
        waiters = [asyncio.create_task(g.acquire(GATE, 1)) for g in (a, b)]
        await eventually(lambda: _waiting(a, 2))
        # a newer configuration (limit 3) arrives with a new call: the waiters go first
        assert not await b.try_acquire(GATE, 3)
        await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
        assert await b.usage(GATE) == (3, 0)


async def test_cancelling_a_waiter_leaves_nothing_held_or_queued(
    clients: Callable[[], Redis], prefix: str
) -> None:
    async with gates_pair(clients, prefix) as (a, b):
        assert await a.try_acquire(GATE, 1)
        waiter = asyncio.create_task(b.acquire(GATE, 1))
        await eventually(lambda: _waiting(a, 1))
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await a.usage(GATE) == (1, 0)
        await a.release(GATE)
        assert await b.try_acquire(GATE, 1)


async def test_the_heartbeat_keeps_a_long_call_s_slot_past_the_ttl(
    clients: Callable[[], Redis], prefix: str
) -> None:
    async with gates_pair(clients, prefix, lease_ttl_s=0.6) as (a, b):
        assert await a.try_acquire(GATE, 1)
        for _ in range(4):  # 1.6 s: more than two TTLs
            await asyncio.sleep(0.4)
            assert not await b.try_acquire(GATE, 1)
        await a.release(GATE)
        assert await b.try_acquire(GATE, 1)


CHILD = """
import asyncio, sys
from pixelgate.resilience.gates_redis import RedisGates
from pixelgate.resilience.counters import open_redis

async def main():
    url, prefix, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    gates = RedisGates(open_redis(url), prefix=prefix, lease_ttl_s=ttl)
    assert await gates.try_acquire(sys.argv[4], 1)
    print("held", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_process_s_slot_comes_back_after_the_ttl(
    clients: Callable[[], Redis], prefix: str, redis_url: str
) -> None:
    ttl = 1.0
    child = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", CHILD, redis_url, prefix, str(ttl), GATE],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"held"
        gates = RedisGates(clients(), prefix=prefix, lease_ttl_s=ttl)
        try:
            await asyncio.sleep(2 * ttl)  # alive: its heartbeat keeps the slot
            assert not await gates.try_acquire(GATE, 1)
            child.kill()  # SIGKILL: no release, no goodbye
            await child.wait()
            killed = time.monotonic()
            await asyncio.wait_for(gates.acquire(GATE, 1), 5 * ttl)
            freed_after = time.monotonic() - killed
            assert freed_after <= ttl + 0.5, f"slot came back after {freed_after:.2f} s"
        finally:
            await gates.close()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


# Rate windows and pauses ----------------------------------------------------------------


async def test_a_rate_window_is_shared_by_two_processes(
    clients: Callable[[], Redis], redis_url: str, prefix: str
) -> None:
    settings = load_settings(redis_url=redis_url, redis_prefix=prefix)
    one = RateWindows(open_limits_storage(settings, redis=clients()))
    two = RateWindows(open_limits_storage(settings, redis=clients()))
    assert await one.acquire("2/second", "provider", "p") == 0.0
    assert await two.acquire("2/second", "provider", "p") == 0.0
    delay = await one.acquire("2/second", "provider", "p")
    assert 0 < delay <= 1.0
    assert await two.remaining("2/second", "provider", "p") == 0


async def test_a_retry_after_seen_by_one_process_pauses_the_other(
    clients: Callable[[], Redis], prefix: str
) -> None:
    one = RedisPauses(clients(), prefix=prefix)
    two = RedisPauses(clients(), prefix=prefix)
    await one.pause("p", 30.0)
    await two.pause("p", 1.0)  # a shorter Retry-After never shortens a pause
    left = await two.remaining(["p", "q"])
    assert 29 < left["p"] <= 30 and left["q"] == 0.0
    ttl_ms = await one.redis.pttl(f"{prefix}:pause:p")
    assert 30_000 <= ttl_ms <= 31_000  # the key expires on its own

    await one.pause("r", 0.3)
    limiter = OutboundLimiter(pauses=two)
    waits: list[WaitInfo] = []

    async def on_wait(info: WaitInfo) -> None:
        waits.append(info)

    started = time.monotonic()
    async with limiter.slot("r", "acct", on_wait=on_wait):
        waited = time.monotonic() - started
    assert waited >= 0.25 and [w.kind for w in waits] == ["retry_after"]


# Redis down -----------------------------------------------------------------------------


async def test_with_redis_unreachable_everything_fails_open_at_once(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    shared = open_shared_state(settings)
    try:
        started = time.monotonic()
        permit, _ = await shared.breakers.allow("p")
        assert permit.allowed
        assert await shared.breakers.record("p", permit, Outcome.FAILURE) == []
        assert (await shared.breakers.snapshots(["p"]))["p"].state == BreakerState.CLOSED
        assert await shared.gates.try_acquire(GATE, 1)
        await asyncio.wait_for(shared.gates.acquire(GATE, 1), 1.0)
        await shared.gates.release(GATE)
        assert await shared.windows.acquire("1/minute", "p") == 0.0
        await shared.pauses.pause("p", 5)
        assert await shared.pauses.remaining(["p"]) == {"p": 0.0}
        limiter = RequestLimiter(shared.limits, guard=shared.guard)
        for _ in range(3):  # over a limit of 1 per minute, yet admitted
            async with limiter.admitting("account", 1):
                pass
        assert time.monotonic() - started < 1.0
    finally:
        await shared.close()


# Two runtimes ---------------------------------------------------------------------------


@asynccontextmanager
async def admin_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime.settings, runtime=runtime, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    ) as client:
        yield client


async def test_a_breaker_opened_in_one_process_makes_the_other_route_around(
    pg: PgDatabase, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    pg.wipe()

    def settings(name: str) -> Any:
        return load_settings(
            data_dir=tmp_path / name,
            database_url=pg.sqlalchemy_url,
            redis_url=redis_url,
            redis_prefix=prefix,
            admin_key=ADMIN,
            lease_seconds=5,
            poll_interval_s=0.2,
            sync_timeout_s=15,
            providers={
                "down": {"kind": "placeholder", "fail_rate": 1.0},
                "fast": {"kind": "placeholder"},
            },
            routing={
                "default": ["down", "fast"],
                "retry": {"attempts": 1},
                "breaker": {"failure_threshold": 2, "cooldown_s": 300},
            },
        )

    one = await Runtime.open(settings("one"))
    two = await Runtime.open(settings("two"))
    try:
        async with admin_client(one) as api_1, admin_client(two) as api_2:
            body = {"prompt": "a lighthouse", "width": 32, "height": 32}
            wait = {"Prefer": "wait=15"}
            await one.start_worker(concurrency=2)
            for _ in range(2):  # process one sees "down" fail twice: the breaker opens
                r = await api_1.post("/v1/generations", json=body, headers=wait)
                assert r.status_code == 200 and r.json()["provider"] == "fast", r.text
            assert one.worker is not None
            await one.worker.stop(5)
            one.worker = None

            await two.start_worker(concurrency=2)
            r = await api_2.post("/v1/generations", json=body, headers=wait)
            assert r.status_code == 200, r.text
            routed = r.json()
            assert routed["provider"] == "fast"
            down = next(e for e in routed["route"] if e["provider"] == "down")
            assert down["decision"] == "skipped" and "circuit breaker open" in down["reason"]
            seen = (await api_2.get("/admin/circuit-breaker")).json()["breakers"]["down"]
            assert (seen["state"], seen["failures"], seen["opened_count"]) == ("open", 2, 1)
            providers = (await api_2.get("/admin/providers?check=false")).json()["providers"]
            assert providers["down"]["circuit_breaker"]["state"] == "open"

            # an admin reset through process two closes it for process one
            r = await api_2.post(
                "/admin/circuit-breaker", json={"action": "reset", "provider": "down"}
            )
            assert r.json()["reset"] == ["down"]
            seen = (await api_1.get("/admin/circuit-breaker")).json()["breakers"]["down"]
            assert seen["state"] == "closed"
    finally:
        await one.close()
        await two.close()
