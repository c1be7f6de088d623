"""The BullMQ bridge in-process: the test's runtime consumes a real queue on the local Redis.

Each test has its own BullMQ key prefix, so it never meets another test's (or another
user's) jobs on the shared Redis. The producer here is the Python ``bullmq`` Queue; the
end-to-end test with a Node producer and a killed bridge is in
``tests/acceptance/test_bullmq_node.py``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from bullmq import Job, Queue, QueueEvents
from sqlalchemy import func, select

from pixelgate.bridge.bullmq import (
    BridgeOptions,
    BullMQBridge,
    JobFailed,
    idempotency_key_for,
    parse_job,
)
from pixelgate.core.pipeline import Caller
from pixelgate.db.tables import Generation, LedgerEntry
from pixelgate.errors import ValidationFailed
from pixelgate.runtime import Runtime
from tests.scaleout.services import REDIS_URL, require_redis

QUEUE = "image-generate"
WAIT_S = 20.0


@pytest.fixture
async def bull_prefix() -> AsyncIterator[str]:
    """A BullMQ key prefix of this test's own; its keys are deleted afterwards."""
    require_redis()
    from redis.asyncio import Redis

    prefix = f"pgtest-bull-{secrets.token_hex(4)}"
    yield prefix
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def start_bridge(runtime: Runtime, bull_prefix: str) -> AsyncIterator[Any]:
    """Starts bridges on this test's queue; closes them before the runtime closes."""
    bridges: list[BullMQBridge] = []

    async def start(caller: Caller | None = None) -> BullMQBridge:
        caller = caller or await runtime.local_caller()
        bridge = BullMQBridge(
            runtime,
            caller,
            BridgeOptions(redis_url=REDIS_URL, queue=QUEUE, prefix=bull_prefix, concurrency=4),
        )
        await bridge.start()
        bridges.append(bridge)
        return bridge

    yield start
    for bridge in bridges:
        await bridge.close(5.0)


@pytest.fixture
async def producer(bull_prefix: str) -> AsyncIterator[tuple[Queue, QueueEvents]]:
    queue = Queue(QUEUE, {"connection": REDIS_URL, "prefix": bull_prefix})
    events = QueueEvents(QUEUE, {"connection": REDIS_URL, "prefix": bull_prefix})
    try:
        yield queue, events
    finally:
        await events.close()
        await queue.close()


async def _finished(queue: Queue, job: Job) -> Job:
    """The job once completed or failed, read back from Redis."""
    for _ in range(int(WAIT_S / 0.05)):
        state = await queue.getJobState(job.id)
        if state in ("completed", "failed"):
            fresh = await Job.fromId(queue, job.id)
            assert fresh is not None
            return fresh
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job.id} did not finish: {await queue.getJobState(job.id)}")


async def _ledger(runtime: Runtime, generation_id: str) -> list[tuple[str, int]]:
    query = select(LedgerEntry.kind, LedgerEntry.credits).where(
        LedgerEntry.generation_id == generation_id
    )
    rows = await runtime.store.read(lambda c: c.execute(query).all())
    return sorted((r[0], r[1]) for r in rows)


async def _generation_count(runtime: Runtime) -> int:
    query = select(func.count()).select_from(Generation)
    return int(await runtime.store.read(lambda c: c.scalar(query)))


async def test_a_request_job_returns_the_image_urls(
    runtime: Runtime,
    start_bridge: Any,
    producer: tuple[Queue, QueueEvents],
    make_account: Callable[..., Any],
) -> None:
    payer, _ = await make_account("payer", credits=100)
    await start_bridge(payer)
    queue, _ = producer
    job = await queue.add("generate", {"prompt": "a lighthouse", "width": 64, "height": 48})
    done = await _finished(queue, job)
    result = done.returnvalue
    assert result["status"] == "SUCCEEDED", done.failedReason
    assert result["generationId"] == result["id"]
    [image] = result["images"]
    assert result["imageUrls"] == [image["url"]]
    assert (image["width"], image["height"]) == (64, 48)
    assert len(image["sha256"]) == 64
    assert result["cost"]["credits"] == 1
    assert done.progress == 100
    view = await runtime.store.get_generation(result["id"])
    assert view.source == "bullmq"
    assert await _ledger(runtime, view.id) == [("debit", -1)]


async def test_a_generation_id_job_follows_the_admitted_generation(
    runtime: Runtime, start_bridge: Any, producer: tuple[Queue, QueueEvents], client: Any
) -> None:
    r = await client.post(
        "/v1/generations", json={"prompt": "slow", "provider": "slow", "width": 64, "height": 64}
    )
    gen_id = r.json()["id"]
    await start_bridge()
    queue, _ = producer
    job = await queue.add("generate", {"generationId": gen_id})
    done = await _finished(queue, job)
    assert done.returnvalue["id"] == gen_id, done.failedReason
    assert done.returnvalue["status"] == "SUCCEEDED"
    assert await _generation_count(runtime) == 1  # nothing new was admitted


async def test_a_failed_generation_fails_the_job_with_its_code_refunded_once(
    runtime: Runtime,
    start_bridge: Any,
    producer: tuple[Queue, QueueEvents],
    make_account: Callable[..., Any],
) -> None:
    payer, _ = await make_account("payer", credits=100)
    await start_bridge(payer)
    queue, _ = producer
    job = await queue.add(
        "generate",
        {"prompt": "x", "provider": "refusing", "width": 64, "height": 64},
        {"attempts": 3, "backoff": {"type": "fixed", "delay": 10}},
    )
    done = await _finished(queue, job)
    assert await queue.getJobState(job.id) == "failed"
    assert done.failedReason.startswith("content_refused: "), done.failedReason
    assert done.attemptsMade == 1  # final: BullMQ does not try again
    [gen] = await runtime.store.list_generations(account_id=None, limit=5)
    assert gen.status == "FAILED"
    assert await _ledger(runtime, gen.id) == [("debit", -1), ("refund", 1)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"width": 64}, "invalid_request: prompt: "),
        ({"prompt": "x", "width": "wide"}, "invalid_request: width: "),
        ({"request": {"prompt": "x"}, "userId": 7}, "invalid_request: userId: unknown field"),
        ({"generationId": 42}, "invalid_request: generationId: "),
        ({"prompt": "x", "apiKey": "pg_nope"}, "unauthorized: apiKey: invalid API key"),
    ],
)
async def test_bad_job_data_fails_the_job_naming_the_field_and_charges_nothing(
    runtime: Runtime,
    start_bridge: Any,
    producer: tuple[Queue, QueueEvents],
    data: dict[str, Any],
    reason: str,
) -> None:
    await start_bridge()
    queue, _ = producer
    job = await queue.add("generate", data, {"attempts": 3})
    done = await _finished(queue, job)
    assert done.failedReason.startswith(reason), done.failedReason
    assert done.attemptsMade == 1
    assert await _generation_count(runtime) == 0
    account = await runtime.store.find_account("admin")
    assert account is not None
    assert (
        await runtime.store.read(lambda c: c.scalar(select(func.count()).select_from(LedgerEntry)))
        == 0
    )


async def test_another_accounts_generation_id_is_refused(
    runtime: Runtime,
    start_bridge: Any,
    producer: tuple[Queue, QueueEvents],
    client: Any,
    make_account: Callable[..., Any],
) -> None:
    r = await client.post("/v1/generations", json={"prompt": "mine", "width": 64, "height": 64})
    caller, _ = await make_account("tenant")
    await start_bridge(caller)
    queue, _ = producer
    job = await queue.add("generate", {"generationId": r.json()["id"]})
    done = await _finished(queue, job)
    assert done.failedReason.startswith("not_found: "), done.failedReason
    assert done.returnvalue is None


async def test_an_api_key_in_the_job_charges_its_account(
    runtime: Runtime,
    start_bridge: Any,
    producer: tuple[Queue, QueueEvents],
    make_account: Callable[..., Any],
) -> None:
    tenant, headers = await make_account("tenant", credits=10)
    key = headers["Authorization"].removeprefix("Bearer ")
    await start_bridge()  # the bridge's own account is the admin's
    queue, _ = producer
    job = await queue.add("generate", {"prompt": "x", "width": 64, "height": 64, "apiKey": key})
    done = await _finished(queue, job)
    assert done.returnvalue["status"] == "SUCCEEDED", done.failedReason
    view = await runtime.store.get_generation(done.returnvalue["id"])
    assert view.account_id == tenant.account_id
    assert (await runtime.store.get_account(tenant.account_id)).credits == 9


async def test_a_redelivered_job_maps_to_the_same_generation_charged_once(
    runtime: Runtime, make_account: Callable[..., Any]
) -> None:
    caller, _ = await make_account("payer", credits=100)
    bridge = BullMQBridge(runtime, caller, BridgeOptions(redis_url=REDIS_URL))
    progress: list[int] = []

    async def report(value: int) -> None:
        progress.append(value)

    data = {"prompt": "a fox", "width": 64, "height": 64}
    first, second = await asyncio.gather(
        bridge.run_job("17", data, report), bridge.run_job("17", data, report)
    )
    third = await bridge.run_job("17", data, report)
    assert first["id"] == second["id"] == third["id"]
    assert await _generation_count(runtime) == 1
    assert await _ledger(runtime, first["id"]) == [("debit", -1)]
    assert progress and max(progress) == 100
    assert (await runtime.store.get_account(caller.account_id)).credits == 99
    other = await bridge.run_job("18", data, report)
    assert other["id"] != first["id"]


async def test_a_reused_job_id_with_other_data_is_refused(runtime: Runtime) -> None:
    bridge = BullMQBridge(runtime, await runtime.local_caller(), BridgeOptions(redis_url=""))

    async def report(value: int) -> None:
        return None

    await bridge.run_job("5", {"prompt": "one", "width": 64, "height": 64}, report)
    with pytest.raises(Exception, match="Idempotency-Key was already used") as info:
        await bridge.run_job("5", {"prompt": "two", "width": 64, "height": 64}, report)
    assert getattr(info.value, "code", None) == "idempotency_key_reused"


async def test_a_canceled_generation_fails_the_job(runtime: Runtime, client: Any) -> None:
    bridge = BullMQBridge(runtime, await runtime.local_caller(), BridgeOptions(redis_url=""))
    r = await client.post(
        "/v1/generations", json={"prompt": "slow", "provider": "slow", "width": 64, "height": 64}
    )
    gen_id = r.json()["id"]

    async def report(value: int) -> None:
        return None

    task = asyncio.create_task(bridge.run_job("9", {"generationId": gen_id}, report))
    await asyncio.sleep(0.1)
    await client.delete(f"/v1/generations/{gen_id}")
    with pytest.raises(JobFailed, match=r"^canceled: ") as info:
        await asyncio.wait_for(task, WAIT_S)
    assert info.value.code == "canceled"


def test_parse_job_reads_the_request_at_the_top_level_or_under_request() -> None:
    top = parse_job({"prompt": "a", "width": 64, "height": 64, "apiKey": "k"})
    nested = parse_job({"request": {"prompt": "a", "width": 64, "height": 64}})
    assert top.request == nested.request
    assert top.api_key == "k" and nested.api_key is None
    with pytest.raises(ValidationFailed, match=r"^request\.width: "):
        parse_job({"request": {"prompt": "a", "width": -1}})
    with pytest.raises(ValidationFailed, match=r"^data: "):
        parse_job(["not", "an", "object"])


def test_idempotency_keys_are_per_queue_and_job_and_always_valid() -> None:
    assert idempotency_key_for("q", "1") == "bullmq:q:1"
    assert idempotency_key_for("q", "1") != idempotency_key_for("r", "1")
    odd = idempotency_key_for("q", "job with spaces " + "x" * 300)
    assert odd.startswith("bullmq:sha256:") and len(odd) < 255
