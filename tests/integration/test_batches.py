"""Batches: each member a normal generation, admitted all or none, run with bounded
concurrency, listed, counted and cancelled."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from pixelgate.config import Settings
from pixelgate.db.tables import Batch, Generation, LedgerEntry
from pixelgate.runtime import Runtime

SLOW_MS = 300


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings(
        providers={
            "fast": {"kind": "placeholder"},
            "slow": {"kind": "placeholder", "latency_ms": SLOW_MS},
            "flaky": {"kind": "placeholder", "fail_rate": 1.0},
            "refusing": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "refused"},
        },
        routing={"default": ["fast"], "retry": {"attempts": 1, "base_delay_s": 0}},
    )


def _small(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "width": 16, "height": 16, **extra}


async def wait_batch(client: httpx.AsyncClient, batch_id: str, **kw: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await client.get(f"/v1/batches/{batch_id}", **kw)).json()
        if body["status"] in ("completed", "canceled"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not finish: {body}")


async def _ledger(runtime: Runtime, account_id: str) -> list[Any]:
    query = select(LedgerEntry.__table__).where(LedgerEntry.account_id == account_id)
    return list(await runtime.db.run(lambda c: c.execute(query).all()))


async def _count(runtime: Runtime, model: Any, account_id: str) -> int:
    query = select(func.count()).select_from(model).where(model.account_id == account_id)
    return int(await runtime.db.run(lambda c: c.scalar(query)) or 0)


async def _assert_ledger_consistent(runtime: Runtime, account_id: str) -> None:
    account = await runtime.store.get_account(account_id)
    entries = await _ledger(runtime, account_id)
    assert account.credits == sum(e.credits for e in entries)
    per_generation = Counter((e.generation_id, e.kind) for e in entries if e.generation_id)
    assert all(n == 1 for n in per_generation.values()), per_generation


async def test_batch_of_50_with_mixed_outcomes_counts_and_refunds(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("mixed", credits=100, tier="ENTERPRISE")
    requests = (
        [_small(f"ok {i}") for i in range(30)]
        + [_small(f"flaky {i}", provider="flaky") for i in range(10)]
        + [_small(f"refused {i}", provider="refusing") for i in range(10)]
    )
    r = await client.post("/v1/batches", headers=headers, json={"requests": requests})
    assert r.status_code == 202, r.text
    created = r.json()
    assert r.headers["location"] == f"/v1/batches/{created['id']}"
    assert created["id"].startswith("bat_") and created["size"] == 50
    assert len(created["generation_ids"]) == 50
    assert created["cost"]["credits"] == 50

    done = await wait_batch(client, created["id"], headers=headers)
    assert done["status"] == "completed"
    assert done["counts"] == {
        "PENDING": 0,
        "PROCESSING": 0,
        "SUCCEEDED": 30,
        "FAILED": 20,
        "CANCELED": 0,
    }
    assert done["completed_at"] is not None
    # each member is a normal generation: own status, cost, events, in admission order
    listed = (
        await client.get(
            "/v1/generations", headers=headers, params={"batch_id": created["id"], "limit": 100}
        )
    ).json()["data"]
    assert len(listed) == 50 and all(g["batch_id"] == created["id"] for g in listed)
    by_prompt = {g["prompt"]: g for g in listed}
    assert [by_prompt[r["prompt"]]["id"] for r in requests] == done["generation_ids"]
    assert by_prompt["ok 0"]["status"] == "SUCCEEDED" and by_prompt["ok 0"]["images"]
    assert by_prompt["flaky 0"]["error"]["code"] == "provider_unavailable"
    assert by_prompt["refused 0"]["error"]["code"] == "content_refused"
    events = await runtime.store.events_after(done["generation_ids"][0])
    assert events[0].type == "queued" and events[-1].type == "succeeded"

    kinds = Counter(e.kind for e in await _ledger(runtime, caller.account_id))
    assert kinds == {"grant": 1, "debit": 50, "refund": 20}
    assert (await runtime.store.get_account(caller.account_id)).credits == 100 - 30
    await _assert_ledger_consistent(runtime, caller.account_id)


async def test_batch_concurrency_bounds_its_running_members(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    _, headers = await make_account("bounded", credits=50, tier="ENTERPRISE")
    r = await client.post(
        "/v1/batches",
        headers=headers,
        json={
            "requests": [_small(f"slow {i}", provider="slow") for i in range(6)],
            "concurrency": 2,
        },
    )
    assert r.status_code == 202, r.text
    batch_id = r.json()["id"]
    assert r.json()["concurrency"] == 2

    samples: list[int] = []

    async def sample() -> None:
        while True:
            query = select(func.count()).where(
                Generation.batch_id == batch_id, Generation.status == "PROCESSING"
            )
            running = await runtime.db.run(lambda c, q=query: c.scalar(q))
            samples.append(int(running or 0))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        # a job outside the batch is not held up by the batch's waiting members
        single = await client.post(
            "/v1/generations", headers=headers, json=_small("outside"), timeout=10
        )
        outside = await runtime.pipeline.wait(single.json()["id"], 5)
        assert outside.status.value == "SUCCEEDED"
        batch = (await client.get(f"/v1/batches/{batch_id}", headers=headers)).json()
        assert batch["status"] == "running"
        done = await wait_batch(client, batch_id, headers=headers)
    finally:
        sampler.cancel()
    assert done["counts"]["SUCCEEDED"] == 6
    assert max(samples) == 2, Counter(samples)


async def test_batch_without_enough_credits_is_402_and_writes_nothing(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("poor", credits=10, tier="ENTERPRISE")
    r = await client.post(
        "/v1/batches",
        headers=headers,
        json={"requests": [_small(f"p{i}") for i in range(11)]},
    )
    assert r.status_code == 402, r.text
    error = r.json()["error"]
    assert error["code"] == "insufficient_credits"
    assert (error["balance"], error["price"]) == (10, 11)
    assert "batch costs 11 credits" in error["message"]
    assert await _count(runtime, Generation, caller.account_id) == 0
    assert await _count(runtime, Batch, caller.account_id) == 0
    assert [e.kind for e in await _ledger(runtime, caller.account_id)] == ["grant"]
    assert (await runtime.store.get_account(caller.account_id)).credits == 10
    # ten fit exactly
    ok = await client.post(
        "/v1/batches", headers=headers, json={"requests": [_small(f"p{i}") for i in range(10)]}
    )
    assert ok.status_code == 202
    await wait_batch(client, ok.json()["id"], headers=headers)
    assert (await runtime.store.get_account(caller.account_id)).credits == 0
    await _assert_ledger_consistent(runtime, caller.account_id)


async def test_an_invalid_member_rejects_the_whole_batch_naming_it(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("strict", credits=10, tier="ENTERPRISE")
    requests = [_small("fine"), _small("fine too"), {"prompt": "huge", "width": 9000, "height": 16}]
    r = await client.post("/v1/batches", headers=headers, json={"requests": requests})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "requests.2.width"
    missing = await client.post(
        "/v1/batches", headers=headers, json={"requests": [_small("a"), {"width": 16}]}
    )
    assert missing.status_code == 422
    assert missing.json()["error"]["field"] == "requests.1.prompt"
    unknown = await client.post(
        "/v1/batches", headers=headers, json={"requests": [_small("a", provider="nope")]}
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["field"].startswith("requests.0.provider")
    empty = await client.post("/v1/batches", headers=headers, json={"requests": []})
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "requests"
    assert await _count(runtime, Generation, caller.account_id) == 0
    assert (await runtime.store.get_account(caller.account_id)).credits == 10


async def test_batch_size_is_capped_by_configuration(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    _, headers = await make_account("big", credits=100, tier="ENTERPRISE")
    runtime.settings.max_batch_size = 3
    r = await client.post(
        "/v1/batches", headers=headers, json={"requests": [_small(f"p{i}") for i in range(4)]}
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "batch_too_large"
    assert "at most 3" in r.json()["error"]["message"]


async def test_batch_over_the_tier_quota_is_429_and_writes_nothing(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("free", credits=10, tier="FREE")
    r = await client.post(
        "/v1/batches", headers=headers, json={"requests": [_small("a"), _small("b")]}
    )
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert await _count(runtime, Generation, caller.account_id) == 0


async def test_cancel_a_batch_cancels_its_unfinished_members(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("quitter", credits=20, tier="ENTERPRISE")
    r = await client.post(
        "/v1/batches",
        headers=headers,
        json={
            "requests": [_small(f"s{i}", provider="slow") for i in range(5)],
            "concurrency": 1,
        },
    )
    batch_id = r.json()["id"]
    for _ in range(200):  # wait until the first member runs
        batch = (await client.get(f"/v1/batches/{batch_id}", headers=headers)).json()
        if batch["counts"]["PROCESSING"]:
            break
        await asyncio.sleep(0.01)
    canceled = await client.delete(f"/v1/batches/{batch_id}", headers=headers)
    assert canceled.status_code in (200, 202)
    assert canceled.json()["canceled_at"] is not None
    done = await wait_batch(client, batch_id, headers=headers)
    assert done["status"] == "canceled"
    assert done["counts"]["CANCELED"] >= 4
    assert done["counts"]["CANCELED"] + done["counts"]["SUCCEEDED"] == 5
    await _assert_ledger_consistent(runtime, caller.account_id)
    account = await runtime.store.get_account(caller.account_id)
    assert account.credits == 20 - done["counts"]["SUCCEEDED"]
    again = await client.delete(f"/v1/batches/{batch_id}", headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "canceled"


async def test_a_completed_batch_cannot_be_canceled(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("finisher", credits=10, tier="ENTERPRISE")
    r = await client.post("/v1/batches", headers=headers, json={"requests": [_small("a")]})
    batch_id = r.json()["id"]
    assert (await wait_batch(client, batch_id, headers=headers))["status"] == "completed"
    refused = await client.delete(f"/v1/batches/{batch_id}", headers=headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "already_finished"
    after = (await client.get(f"/v1/batches/{batch_id}", headers=headers)).json()
    assert after["status"] == "completed" and after["canceled_at"] is None
    await _assert_ledger_consistent(runtime, caller.account_id)


async def test_batches_are_scoped_to_the_account(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    _, alice = await make_account("alice", credits=10, tier="ENTERPRISE")
    _, bob = await make_account("bob", credits=10, tier="ENTERPRISE")
    mine = (
        await client.post("/v1/batches", headers=alice, json={"requests": [_small("a")]})
    ).json()
    assert (await client.get(f"/v1/batches/{mine['id']}", headers=bob)).status_code == 404
    assert (await client.delete(f"/v1/batches/{mine['id']}", headers=bob)).status_code == 404
    assert (await client.get("/v1/batches", headers=bob)).json()["data"] == []
    listed = (await client.get("/v1/batches", headers=alice)).json()
    assert [b["id"] for b in listed["data"]] == [mine["id"]]
    assert listed["has_more"] is False
    await wait_batch(client, mine["id"], headers=alice)


async def test_idempotency_key_replays_the_batch_once(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("retrier", credits=10, tier="ENTERPRISE")
    body = {"requests": [_small("a"), _small("b")], "concurrency": 1}
    keyed = {**headers, "Idempotency-Key": "batch-1"}
    answers = await asyncio.gather(
        *(client.post("/v1/batches", headers=keyed, json=body) for _ in range(5))
    )
    assert len({a.json()["id"] for a in answers}) == 1
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 202]
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 4
    assert await _count(runtime, Generation, caller.account_id) == 2
    assert await _count(runtime, Batch, caller.account_id) == 1
    other = await client.post("/v1/batches", headers=keyed, json={"requests": [_small("c")]})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    await wait_batch(client, answers[0].json()["id"], headers=headers)
    assert (await runtime.store.get_account(caller.account_id)).credits == 8
