"""The dedup cache: identical requests with a fixed seed reuse one result, at the cache
price; identical requests in flight share one provider call."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from pixelgate.config import Settings
from pixelgate.db.tables import Event, Generation, Image, LedgerEntry
from pixelgate.runtime import Runtime

WAIT = {"Prefer": "wait=10"}
SLOW_MS = 400


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings(
        providers={
            "fast": {"kind": "placeholder"},
            "slow": {"kind": "placeholder", "latency_ms": SLOW_MS},
            "flaky": {"kind": "placeholder", "fail_rate": 1.0, "latency_ms": SLOW_MS},
        },
        routing={"default": ["fast"], "retry": {"attempts": 1, "base_delay_s": 0}},
    )


def _req(**extra: Any) -> dict[str, Any]:
    return {"prompt": "a red fox", "seed": 42, "width": 32, "height": 32, "cache": True, **extra}


async def _provider_calls(runtime: Runtime, *gen_ids: str) -> int:
    query = select(func.count()).where(
        Event.generation_id.in_(gen_ids), Event.type == "provider_selected"
    )
    return int(await runtime.db.run(lambda c: c.scalar(query)) or 0)


async def _ledger(runtime: Runtime, account_id: str) -> list[Any]:
    query = select(LedgerEntry.__table__).where(LedgerEntry.account_id == account_id)
    return list(await runtime.db.run(lambda c: c.execute(query).all()))


async def _assert_ledger_consistent(runtime: Runtime, account_id: str) -> None:
    account = await runtime.store.get_account(account_id)
    entries = await _ledger(runtime, account_id)
    assert account.credits == sum(e.credits for e in entries)
    per_generation = Counter((e.generation_id, e.kind) for e in entries if e.generation_id)
    assert all(n == 1 for n in per_generation.values()), per_generation


async def test_cache_hit_returns_the_same_images_at_once_and_charges_nothing(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("saver", credits=10)
    first = (await client.post("/v1/generations", headers={**headers, **WAIT}, json=_req())).json()
    assert first["status"] == "SUCCEEDED" and first["cached"] is False
    hit = await client.post(
        "/v1/generations", headers=headers, json=_req(prompt="  a   red fox ", metadata={"x": 1})
    )
    assert hit.status_code == 200, hit.text
    body = hit.json()
    assert body["id"] != first["id"]
    assert body["status"] == "SUCCEEDED" and body["progress"] == 100
    assert body["cached"] is True and body["cached_from"] == first["id"]
    assert body["cost"]["credits"] == 0 and body["cost"]["usd"] == "0"
    assert body["provider"] == first["provider"] and body["model"] == first["model"]
    [original], [copy] = first["images"], body["images"]
    assert copy["sha256"] == original["sha256"] and copy["key"] == original["key"]
    assert copy["id"] != original["id"] and copy["approval"] == "pending"
    assert (await client.get(copy["url"].split("testserver", 1)[-1])).status_code == 200
    # one provider call in all, one debit (the first), no ledger row for the free hit
    assert await _provider_calls(runtime, first["id"], body["id"]) == 1
    kinds = Counter((e.generation_id, e.kind) for e in await _ledger(runtime, caller.account_id))
    assert kinds[(first["id"], "debit")] == 1 and (body["id"], "debit") not in kinds
    assert (await runtime.store.get_account(caller.account_id)).credits == 9
    events = [e.type for e in await runtime.store.events_after(body["id"])]
    assert events == ["queued", "succeeded"]
    await _assert_ledger_consistent(runtime, caller.account_id)


async def test_cache_price_is_charged_when_configured(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    runtime.settings.credits.cache_price = 1
    caller, headers = await make_account("payer", credits=10)
    first = (await client.post("/v1/generations", headers={**headers, **WAIT}, json=_req())).json()
    hit = (await client.post("/v1/generations", headers=headers, json=_req())).json()
    assert hit["cached"] is True and hit["cost"]["credits"] == 1
    entries = await _ledger(runtime, caller.account_id)
    assert [(e.generation_id, e.kind, e.credits) for e in entries if e.generation_id] == [
        (first["id"], "debit", -1),
        (hit["id"], "debit", -1),
    ]
    assert (await runtime.store.get_account(caller.account_id)).credits == 8
    await _assert_ledger_consistent(runtime, caller.account_id)


async def test_without_a_seed_or_with_other_parameters_there_is_no_cache(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    _, headers = await make_account("misser", credits=10)
    unseeded = {"prompt": "a red fox", "width": 32, "height": 32, "cache": True}
    a = (await client.post("/v1/generations", headers={**headers, **WAIT}, json=unseeded)).json()
    b = (await client.post("/v1/generations", headers={**headers, **WAIT}, json=unseeded)).json()
    assert a["cached"] is False and b["cached"] is False
    assert await _provider_calls(runtime, a["id"], b["id"]) == 2
    seeded = (await client.post("/v1/generations", headers={**headers, **WAIT}, json=_req())).json()
    for different in (_req(seed=43), _req(width=48), _req(format="webp"), _req(n=2)):
        other = await client.post("/v1/generations", headers={**headers, **WAIT}, json=different)
        assert other.json()["cached"] is False, different
    off = await client.post("/v1/generations", headers={**headers, **WAIT}, json=_req(cache=False))
    assert off.json()["cached"] is False
    assert seeded["cached"] is False


async def test_the_account_default_turns_the_cache_on(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("defaulter", credits=10)
    await runtime.store.update_account(caller.account_id, settings={"cache": True})
    plain = {"prompt": "a lighthouse", "seed": 7, "width": 16, "height": 16}
    first = (await client.post("/v1/generations", headers={**headers, **WAIT}, json=plain)).json()
    hit = (await client.post("/v1/generations", headers=headers, json=plain)).json()
    assert hit["cached"] is True and hit["cached_from"] == first["id"]
    off = (
        await client.post("/v1/generations", headers=headers, json={**plain, "cache": False})
    ).json()
    assert off["cached"] is False


async def test_the_cache_is_per_account(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    _, alice = await make_account("alice", credits=10)
    _, bob = await make_account("bob", credits=10)
    mine = (await client.post("/v1/generations", headers={**alice, **WAIT}, json=_req())).json()
    theirs = (await client.post("/v1/generations", headers={**bob, **WAIT}, json=_req())).json()
    assert theirs["cached"] is False
    assert await _provider_calls(runtime, mine["id"], theirs["id"]) == 2


async def test_concurrent_identical_requests_share_one_provider_call(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("sharer", credits=10)
    answers = await asyncio.gather(
        *(
            client.post("/v1/generations", headers=headers, json=_req(provider="slow"))
            for _ in range(3)
        )
    )
    bodies = [a.json() for a in answers]
    leaders = [b for b in bodies if not b["cached"]]
    followers = [b for b in bodies if b["cached"]]
    assert len(leaders) == 1 and len(followers) == 2
    leader = leaders[0]
    assert all(f["cached_from"] == leader["id"] for f in followers)
    assert all(f["status"] == "PENDING" for f in followers)
    views = [await runtime.pipeline.wait(b["id"], 10) for b in bodies]
    assert {v.status.value for v in views} == {"SUCCEEDED"}
    assert len({v.images[0].sha256 for v in views}) == 1
    assert len({v.images[0].key for v in views}) == 1
    assert await _provider_calls(runtime, *(b["id"] for b in bodies)) == 1
    follower_events = [e.type for e in await runtime.store.events_after(followers[0]["id"])]
    assert follower_events == ["queued", "waiting", "succeeded"]
    # the leader is charged, the followers pay the cache price (0)
    assert (await runtime.store.get_account(caller.account_id)).credits == 9
    await _assert_ledger_consistent(runtime, caller.account_id)


async def test_followers_of_a_failed_leader_fail_and_are_refunded(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    runtime.settings.credits.cache_price = 1
    caller, headers = await make_account("unlucky", credits=10)
    leader = (
        await client.post("/v1/generations", headers=headers, json=_req(provider="flaky"))
    ).json()
    follower = (
        await client.post("/v1/generations", headers=headers, json=_req(provider="flaky"))
    ).json()
    assert follower["cached_from"] == leader["id"]
    failed = await runtime.pipeline.wait(follower["id"], 10)
    assert failed.status.value == "FAILED"
    assert failed.error_code == "cache_leader_failed"
    assert leader["id"] in (failed.error_message or "")
    assert (await runtime.pipeline.wait(leader["id"], 10)).status.value == "FAILED"
    kinds = Counter((e.generation_id, e.kind) for e in await _ledger(runtime, caller.account_id))
    assert kinds[(follower["id"], "refund")] == 1 and kinds[(leader["id"], "refund")] == 1
    assert (await runtime.store.get_account(caller.account_id)).credits == 10
    await _assert_ledger_consistent(runtime, caller.account_id)
    # a failed original is never a cache source: the next identical request runs again
    retry = (
        await client.post("/v1/generations", headers=headers, json=_req(provider="flaky"))
    ).json()
    assert retry["cached"] is False


async def test_a_follower_canceled_by_its_owner_stays_canceled(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("impatient", credits=10)
    leader = (
        await client.post("/v1/generations", headers=headers, json=_req(provider="slow"))
    ).json()
    follower = (
        await client.post("/v1/generations", headers=headers, json=_req(provider="slow"))
    ).json()
    canceled = await client.delete(f"/v1/generations/{follower['id']}", headers=headers)
    assert canceled.json()["status"] == "CANCELED"
    assert (await runtime.pipeline.wait(leader["id"], 10)).status.value == "SUCCEEDED"
    view = await runtime.store.get_generation(follower["id"])
    assert view.status.value == "CANCELED" and view.images == []
    await _assert_ledger_consistent(runtime, caller.account_id)


async def test_followers_are_finished_in_the_leaders_transaction(settings: Settings) -> None:
    """No worker runs followers: the leader's finish settles them, so a crash right after
    it cannot strand them (and a re-run leader settles them then)."""
    from pixelgate.core.models import GenerationRequest
    from pixelgate.core.pipeline import Caller
    from pixelgate.db.store import NewImage

    runtime = await Runtime.open(settings)  # no worker
    try:
        account = await runtime.store.create_account("crashy", tier="PRO", credits=5)
        caller = Caller(account_id=account.id, account_name=account.name)
        request = GenerationRequest.model_validate(_req())
        leader = (await runtime.pipeline.admit(caller, request)).generation
        follower = (await runtime.pipeline.admit(caller, request)).generation
        assert follower.cached_from == leader.id
        [job] = await runtime.store.claim("w1", 30, 10)  # the follower is not claimable
        assert job.id == leader.id
        image = NewImage(0, "ai/k.png", 32, 32, "png", "image/png", 10, "ab" * 32)
        await runtime.store.finish_succeeded(
            leader.id,
            "w1",
            provider="fast",
            model="m",
            images=[image],
            cost_usd=None,
            provider_ms=1,
            route=[],
            account_id=account.id,
        )
        done = await runtime.store.get_generation(follower.id)
        assert done.status.value == "SUCCEEDED" and done.images[0].key == "ai/k.png"
        assert await runtime.store.settled_followers(leader.id, done.completed_at) == [follower.id]
    finally:
        await runtime.close()


async def test_identical_members_of_one_batch_share_a_call(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("dup-batch", credits=10, tier="ENTERPRISE")
    r = await client.post(
        "/v1/batches", headers=headers, json={"requests": [_req(provider="slow")] * 3}
    )
    assert r.status_code == 202, r.text
    ids = r.json()["generation_ids"]
    assert r.json()["cost"]["credits"] == 1
    views = [await runtime.pipeline.wait(i, 10) for i in ids]
    assert [v.status.value for v in views] == ["SUCCEEDED"] * 3
    assert [v.cached_from for v in views] == [None, ids[0], ids[0]]
    assert await _provider_calls(runtime, *ids) == 1
    keys = await runtime.db.run(
        lambda c: c.scalars(select(Image.key).where(Image.generation_id.in_(ids))).all()
    )
    statuses = await runtime.db.run(
        lambda c: c.scalars(select(Generation.status).where(Generation.id.in_(ids))).all()
    )
    assert len(keys) == 3 and len(set(keys)) == 1 and set(statuses) == {"SUCCEEDED"}
    await _assert_ledger_consistent(runtime, caller.account_id)
