"""RedisBus: fan-out between processes (two buses stand in for two), cancel broadcast,
and surviving a Redis restart (on a redis-server of our own)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from pixelgate.queue.bus_redis import RedisBus
from tests.scaleout.services import RedisServer


async def test_a_publish_in_one_process_wakes_a_subscriber_in_another(redis_url: str) -> None:
    prefix = f"bustest-{secrets.token_hex(4)}"
    api, worker = RedisBus(redis_url, prefix=prefix), RedisBus(redis_url, prefix=prefix)
    await api.start()
    await worker.start()
    try:
        async with api.subscribe("gen_a") as sub:
            await worker.publish("gen_b")  # someone else's job: no wake-up
            assert not await sub.wait(0.3)
            await worker.publish("gen_a")
            assert await sub.wait(2.0)
        cancel = asyncio.Event()
        worker.on_cancel("gen_c", cancel.set)
        await api.request_cancel("gen_c")
        await asyncio.wait_for(cancel.wait(), 2.0)
        waiter = asyncio.create_task(worker.wait_for_jobs(5.0))
        for _ in range(40):  # until the waiter has subscribed and heard one
            await api.notify_jobs()
            await asyncio.wait([waiter], timeout=0.05)
            if waiter.done():
                break
        assert waiter.done()  # woken: its own timeout is 5 s, this loop at most 2 s
        assert await api.ping()
    finally:
        await api.close()
        await worker.close()


async def test_event_notifications_announced_one_by_one_share_a_round_trip(
    redis_url: str,
) -> None:
    """A flush of running jobs' events announces them one after another: they are queued
    for one pipelined round trip, not one each; a final one waits for its own."""
    prefix = f"bustest-{secrets.token_hex(4)}"
    api, worker = RedisBus(redis_url, prefix=prefix), RedisBus(redis_url, prefix=prefix)
    await api.start()
    await worker.start()
    round_trips = 0
    pipeline = worker.redis.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal round_trips
        round_trips += 1
        return pipeline(*args, **kwargs)

    worker.redis.pipeline = counted  # type: ignore[method-assign]
    try:
        async with api.subscribe("gen_99") as last, api.subscribe("gen_0") as first:
            for i in range(100):
                await worker.publish(f"gen_{i}")
            assert await first.wait(2.0) and await last.wait(2.0)
            assert not first.maybe_final
            assert round_trips <= 2
            await worker.publish("gen_0", final=True)
            assert round_trips <= 3
            assert await first.wait(2.0) and first.maybe_final
    finally:
        await api.close()
        await worker.close()


async def test_the_bus_reconnects_after_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    a, b = RedisBus(server.url, prefix="restart"), RedisBus(server.url, prefix="restart")
    await a.start()
    await b.start()
    try:
        async with a.subscribe("gen_x") as sub:
            server.stop()
            await b.publish("gen_x")  # dropped (logged), never raised
            # a reconnecting bus wakes its subscribers: they look at the database again
            server.start()
            assert await sub.wait(10.0)
            await asyncio.wait_for(a.connected.wait(), 10.0)
            await asyncio.wait_for(b.connected.wait(), 10.0)
            sub.notify()
            await sub.wait(0)
            for _ in range(50):  # the re-subscription is live again
                await b.publish("gen_x")
                if await sub.wait(0.2):
                    break
            else:
                raise AssertionError("no notification after the restart")
    finally:
        await a.close()
        await b.close()
        server.stop()
