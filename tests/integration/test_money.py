"""Credits, quotas and budgets: exact under concurrency, and nothing charged for a rejection."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from pixelgate.config import Settings
from pixelgate.core.routing import RetryPolicy
from pixelgate.db.tables import Generation, LedgerEntry
from pixelgate.runtime import Runtime


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings(
        providers={
            "fast": {"kind": "placeholder"},
            "priced": {"kind": "placeholder", "price_usd": "0.04"},
            "dear": {"kind": "placeholder", "price_usd": "0.25"},
            "flaky": {"kind": "placeholder", "fail_rate": 1.0},
        },
        routing={"default": ["fast"]},
    )


async def _ledger(runtime: Runtime, account_id: str) -> list[Any]:
    query = select(LedgerEntry.__table__).where(LedgerEntry.account_id == account_id)
    return list(await runtime.db.run(lambda c: c.execute(query).all()))


async def _generation_count(runtime: Runtime, account_id: str) -> int:
    query = select(func.count()).select_from(Generation).where(
        Generation.account_id == account_id
    )
    return int(await runtime.db.run(lambda c: c.scalar(query)) or 0)


async def _assert_ledger_consistent(runtime: Runtime, account_id: str) -> None:
    account = await runtime.store.get_account(account_id)
    entries = await _ledger(runtime, account_id)
    assert account.credits is not None and account.credits >= 0
    assert account.credits == sum(e.credits for e in entries)
    per_generation = Counter((e.generation_id, e.kind) for e in entries if e.generation_id)
    assert all(n == 1 for n in per_generation.values()), per_generation


async def test_200_concurrent_submissions_with_50_credits(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("buyer", credits=50, tier="ENTERPRISE")
    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/generations",
                headers=headers,
                json={"prompt": f"p{i}", "width": 16, "height": 16},
            )
            for i in range(200)
        )
    )
    codes = Counter(a.status_code for a in answers)
    assert codes == {202: 50, 402: 150}
    rejected = next(a for a in answers if a.status_code == 402).json()["error"]
    assert rejected["code"] == "insufficient_credits"
    assert rejected["balance"] == 0 and rejected["price"] == 1
    account = await runtime.store.get_account(caller.account_id)
    assert account.credits == 0
    assert await _generation_count(runtime, caller.account_id) == 50
    await _assert_ledger_consistent(runtime, caller.account_id)


async def test_refunds_racing_debits_keep_the_ledger_exact(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    runtime.pipeline.retry = RetryPolicy(attempts=1)
    caller, headers = await make_account("racer", credits=20, tier="ENTERPRISE")
    failing = await asyncio.gather(
        *(
            client.post(
                "/v1/generations", headers=headers, json={"prompt": f"f{i}", "provider": "flaky"}
            )
            for i in range(20)
        )
    )
    assert all(a.status_code == 202 for a in failing)
    # 20 refunds (the flaky jobs failing) race 20 new debits
    racing = await asyncio.gather(
        *(
            client.post(
                "/v1/generations",
                headers=headers,
                json={"prompt": f"d{i}", "width": 16, "height": 16},
            )
            for i in range(20)
        )
    )
    for answer in failing:
        await runtime.pipeline.wait(answer.json()["id"], 10)
    accepted = [a for a in racing if a.status_code == 202]
    for answer in accepted:
        await runtime.pipeline.wait(answer.json()["id"], 10)
    assert {a.status_code for a in racing} <= {202, 402}
    entries = await _ledger(runtime, caller.account_id)
    kinds = Counter(e.kind for e in entries)
    assert kinds["refund"] == 20
    assert kinds["debit"] == 20 + len(accepted)
    account = await runtime.store.get_account(caller.account_id)
    assert account.credits == 20 - len(accepted)
    await _assert_ledger_consistent(runtime, caller.account_id)


async def test_duplicate_delivery_charges_and_refunds_once(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    from pixelgate.db.store import ClaimedJob

    runtime.pipeline.retry = RetryPolicy(attempts=1)
    caller, headers = await make_account("dup", credits=10, tier="ENTERPRISE")
    ok = (await client.post("/v1/generations", headers=headers, json={"prompt": "ok"})).json()
    bad = (
        await client.post(
            "/v1/generations", headers=headers, json={"prompt": "bad", "provider": "flaky"}
        )
    ).json()
    ok_view = await runtime.pipeline.wait(ok["id"], 10)
    bad_view = await runtime.pipeline.wait(bad["id"], 10)
    assert (ok_view.status.value, bad_view.status.value) == ("SUCCEEDED", "FAILED")
    before = await _ledger(runtime, caller.account_id)
    for view in (ok_view, bad_view):
        job = ClaimedJob(
            id=view.id,
            account_id=caller.account_id,
            account_name="dup",
            project="default",
            request=view.request,
            created_at=view.created_at,
            provider_job_id=None,
            provider_job_provider=None,
            deliveries=2,
        )
        await runtime.pipeline.execute(job, "another-worker")
        await runtime.pipeline.fail(job, None, "internal_error", "duplicate")
    after = await _ledger(runtime, caller.account_id)
    assert [(e.kind, e.credits) for e in after] == [(e.kind, e.credits) for e in before]
    assert (await runtime.store.get_generation(ok["id"])).status.value == "SUCCEEDED"
    await _assert_ledger_consistent(runtime, caller.account_id)
    assert (await runtime.store.get_account(caller.account_id)).credits == 9


async def test_keep_policy_does_not_refund(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.pipeline.retry = RetryPolicy(attempts=1)
    r = await client.post(
        "/admin/accounts",
        json={"name": "keeper", "credits": 5, "tier": "PRO", "credit_policy": "keep"},
    )
    assert r.status_code == 201, r.text
    key = (await client.post("/admin/accounts/keeper/keys", json={})).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    gen = (
        await client.post(
            "/v1/generations", headers=headers, json={"prompt": "x", "provider": "flaky"}
        )
    ).json()
    assert (await runtime.pipeline.wait(gen["id"], 10)).status.value == "FAILED"
    account = (await client.get("/v1/account", headers=headers)).json()
    assert account["credits"] == 4 and account["credit_policy"] == "keep"


async def test_cancel_before_start_refunds_once(settings: Settings) -> None:
    runtime = await Runtime.open(settings)  # no worker: jobs stay PENDING
    try:
        account = await runtime.store.create_account("c", tier="PRO", credits=3)
        from pixelgate.core.models import GenerationRequest
        from pixelgate.core.pipeline import Caller

        caller = Caller(account_id=account.id, account_name="c")
        admitted = await runtime.pipeline.admit(caller, GenerationRequest(prompt="x"))
        assert admitted.credits_remaining == 2
        await runtime.pipeline.cancel(admitted.generation.id, account.id)
        assert (await runtime.store.get_account(account.id)).credits == 3
        kinds = sorted(e.kind for e in await _ledger(runtime, account.id))
        assert kinds == ["debit", "grant", "refund"]
    finally:
        await runtime.close()


async def test_free_tier_second_generation_is_429_until_utc_midnight(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    # seed 004: daily limits reset at UTC midnight (``resetTime`` ``…T00:00:00Z``)
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    runtime.store.clock = lambda: now
    caller, headers = await make_account("free", tier="FREE")
    first = await client.post("/api/generate", headers=headers, json={"prompt": "one"})
    assert first.status_code == 202
    assert first.headers["x-ratelimit-limit"] == "1"
    assert first.headers["x-ratelimit-remaining"] == "0"
    second = await client.post("/api/generate", headers=headers, json={"prompt": "two"})
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) == 14 * 3600
    body = second.json()
    assert body["remaining"] == 0
    assert body["resetTime"] == "2026-03-02T00:00:00Z"
    assert body["error"].startswith("Rate limit exceeded for your tier")
    native = await client.post("/v1/generations", headers=headers, json={"prompt": "two"})
    assert native.status_code == 429
    assert native.json()["error"]["code"] == "rate_limited"
    midnight = datetime(2026, 3, 2, tzinfo=UTC)
    assert native.headers["x-ratelimit-reset"] == str(int(midnight.timestamp()))
    assert await _generation_count(runtime, caller.account_id) == 1

    now = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)  # still the same UTC day
    late = await client.post("/api/generate", headers=headers, json={"prompt": "x"})
    assert late.status_code == 429
    now = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)  # a new UTC day
    again = await client.post("/api/generate", headers=headers, json={"prompt": "three"})
    assert again.status_code == 202


async def test_a_sliding_window_is_configurable_per_tier(
    make_settings: Any, tmp_path: Any
) -> None:
    from pixelgate.core.models import GenerationRequest
    from pixelgate.core.pipeline import Caller
    from pixelgate.errors import RateLimited

    settings = make_settings(tiers={"FREE": {"daily_limit": 1, "window": "sliding"}})
    runtime = await Runtime.open(settings)
    try:
        now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
        runtime.store.clock = lambda: now
        account = await runtime.store.create_account("f", tier="FREE")
        caller = Caller(account_id=account.id, account_name="f")
        await runtime.pipeline.admit(caller, GenerationRequest(prompt="x"))
        now = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)  # past midnight, inside 24 h
        with pytest.raises(RateLimited) as refused:
            await runtime.pipeline.admit(caller, GenerationRequest(prompt="y"))
        assert refused.value.reset_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()
        now = datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC)
        await runtime.pipeline.admit(caller, GenerationRequest(prompt="z"))
    finally:
        await runtime.close()


async def test_seed004_tier_variables_are_honoured(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENERATION_FREE_TIER_LIMIT", "3")
    monkeypatch.setenv("GENERATION_FREE_TIER_WINDOW", "60")
    tier = make_settings().tier("FREE")
    assert (tier.daily_limit, tier.window_s) == (3, 60)


async def test_daily_budget_is_checked_and_resets_at_utc_midnight(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    now = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    runtime.store.clock = lambda: now
    await client.post("/admin/accounts", json={"name": "thrifty", "tier": "PRO"})
    r = await client.patch("/admin/accounts/thrifty", json={"daily_budget_usd": "0.10"})
    assert r.json()["budget"]["daily_usd"] == "0.1"
    key = (await client.post("/admin/accounts/thrifty/keys", json={})).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    body = {"prompt": "x", "provider": "priced", "width": 16, "height": 16}
    for _ in range(2):
        ok = await client.post("/v1/generations", headers=headers, json=body, params={}, timeout=10)
        assert ok.status_code == 202
        await runtime.pipeline.wait(ok.json()["id"], 10)
    over = await client.post("/v1/generations", headers=headers, json=body)
    assert over.status_code == 402
    error = over.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["spent_today_usd"] == "0.08" and error["resets_at"] == "2026-03-02T00:00:00Z"
    account = (await client.get("/v1/account", headers=headers)).json()
    assert account["budget"]["remaining_usd"] == "0.02"
    now = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)
    assert (await client.post("/v1/generations", headers=headers, json=body)).status_code == 202


async def test_rejected_requests_write_nothing(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    caller, headers = await make_account("broke", credits=1, tier="FREE")
    assert (
        await client.post("/v1/generations", headers=headers, json={"prompt": "x", "n": 2})
    ).status_code == 402
    assert (
        await client.post("/v1/generations", headers=headers, json={"prompt": ""})
    ).status_code == 422
    assert (
        await client.post(
            "/v1/generations",
            headers=headers,
            json={"prompt": "x", "provider": "dear", "max_cost_per_image": "0.1"},
        )
    ).status_code == 422
    assert (
        await client.post("/v1/generations", headers=headers, json={"prompt": "x"})
    ).status_code == 202
    assert (
        await client.post("/v1/generations", headers=headers, json={"prompt": "y"})
    ).status_code == 429
    assert await _generation_count(runtime, caller.account_id) == 1
    kinds = sorted(e.kind for e in await _ledger(runtime, caller.account_id))
    assert kinds == ["debit", "grant"]


async def test_max_cost_per_image_skips_dearer_providers(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/estimate",
        json={"prompt": "x", "providers": ["dear", "priced"], "max_cost_per_image": "0.05"},
    )
    assert r.status_code == 200
    assert r.json()["provider"] == "priced" and r.json()["usd"] == "0.04"
    none = await client.post(
        "/v1/estimate", json={"prompt": "x", "provider": "dear", "max_cost_per_image": "0.05"}
    )
    assert none.status_code == 422
    assert none.json()["error"]["field"] == "max_cost_per_image"


async def test_estimate_equals_what_is_charged(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    _, headers = await make_account("est", credits=100, tier="PRO")
    body = {
        "prompt": "x",
        "provider": "priced",
        "n": 3,
        "width": 1280,
        "height": 720,
        "reference_image_url": "https://example.com/ref.png",
    }
    estimate = (await client.post("/v1/estimate", headers=headers, json=body)).json()
    assert estimate["credits"] == 1 + 1 + 2 + 1
    assert estimate["usd"] == "0.12"
    created = (await client.post("/v1/generations", headers=headers, json=body)).json()
    assert created["cost"]["credits"] == estimate["credits"]
    assert created["cost"]["estimated_usd"] == estimate["usd"]
    account = (await client.get("/v1/account", headers=headers)).json()
    assert account["credits"] == 100 - estimate["credits"]


async def test_usage_and_stats(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime
) -> None:
    _, headers = await make_account("user", credits=10, tier="PRO")
    for _ in range(2):
        r = await client.post(
            "/v1/generations",
            headers={**headers, "Prefer": "wait=10"},
            json={"prompt": "x", "provider": "priced", "width": 16, "height": 16},
        )
        assert r.json()["status"] == "SUCCEEDED"
        assert r.json()["cost"]["usd"] == "0.04"
    usage = (await client.get("/v1/usage", headers=headers, params={"days": 7})).json()
    [row] = usage["data"]
    assert (row["provider"], row["succeeded"], row["credits"], row["usd"]) == (
        "priced",
        2,
        2,
        "0.08",
    )
    assert row["avg_latency_ms"] is not None
    today = runtime.store.clock().date().isoformat()
    stats = (await client.get("/admin/stats", params={"date": today})).json()
    assert stats["totals"]["succeeded"] == 2 and stats["by_provider"]["priced"]["usd"] == "0.08"
    assert (await client.get("/admin/stats", params={"days": 7})).status_code == 200
    assert (await client.get("/admin/stats", headers=headers)).status_code == 403
    bad = await client.get("/admin/stats", params={"date": "yesterday"})
    assert bad.status_code == 422


async def test_admin_account_and_key_management(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/admin/accounts", json={"name": "acme", "tier": "pro", "credits": 5}
    )
    assert created.status_code == 201 and created.json()["tier"] == "PRO"
    assert (await client.post("/admin/accounts", json={"name": "acme"})).status_code == 409
    bad_tier = await client.post("/admin/accounts", json={"name": "x", "tier": "GOLD"})
    assert bad_tier.status_code == 422 and bad_tier.json()["error"]["field"] == "tier"
    granted = await client.post(
        "/admin/accounts/acme/credits", json={"credits": 10, "reason": "top-up"}
    )
    assert granted.json()["credits"] == 15
    revoked = await client.post(
        "/admin/accounts/acme/credits", json={"credits": -20, "reason": "oops"}
    )
    assert revoked.status_code == 409
    key = (await client.post("/admin/accounts/acme/keys", json={})).json()
    headers = {"Authorization": f"Bearer {key['key']}"}
    ledger = (await client.get("/v1/account/ledger", headers=headers)).json()
    assert ledger["balance"] == 15
    assert [(e["kind"], e["credits"], e["actor"]) for e in ledger["entries"]] == [
        ("grant", 10, "admin"),
        ("grant", 5, "admin"),
    ]
    assert (await client.get("/admin/accounts", headers=headers)).status_code == 403
    listed = (await client.get("/admin/keys")).json()["data"]
    assert all("key_hash" not in k and key["key"] not in str(k) for k in listed)
    assert (await client.delete(f"/admin/keys/{key['id']}")).status_code == 200
    assert (await client.get("/v1/account", headers=headers)).status_code == 401
    assert (await client.get("/admin/accounts/nobody")).status_code == 404


async def test_budget_amounts_are_decimal_exact(runtime: Runtime) -> None:
    account = await runtime.store.create_account("exact", tier="PRO")
    updated = await runtime.store.update_account(account.id, daily_budget_usd=Decimal("0.3"))
    assert updated.daily_budget_usd == Decimal("0.3")


async def test_requests_per_minute_of_a_tier(make_settings: Any) -> None:
    from pixelgate.api.app import create_app

    settings = make_settings(tiers={"BURST": {"daily_limit": 100, "requests_per_minute": 2}})
    runtime = await Runtime.open(settings)
    try:
        account = await runtime.store.create_account("bursty", tier="BURST")
        _, key = await runtime.store.create_key(account.id)
        app = create_app(settings, runtime=runtime, run_worker=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t",
                                     headers={"Authorization": f"Bearer {key}"}) as c:
            codes = [(await c.post("/v1/generations", json={"prompt": f"{i}"})).status_code
                     for i in range(3)]
            assert codes == [202, 202, 429]
            limited = await c.post("/v1/generations", json={"prompt": "again"})
            assert 50 <= int(limited.headers["retry-after"]) <= 60
            assert limited.json()["error"]["limit"] == 2
    finally:
        await runtime.close()


async def test_a_refused_request_uses_no_slot_of_the_rate_limit(make_settings: Any) -> None:
    """A 402 (credits or budget) or a 422 counts against nothing: the slots stay free."""
    from pixelgate.api.app import create_app

    settings = make_settings(tiers={"BURST": {"daily_limit": 100, "requests_per_minute": 2}})
    runtime = await Runtime.open(settings)
    try:
        account = await runtime.store.create_account("short", tier="BURST", credits=0)
        _, key = await runtime.store.create_key(account.id)
        app = create_app(settings, runtime=runtime, run_worker=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t",
                                     headers={"Authorization": f"Bearer {key}"}) as c:
            for i in range(4):
                poor = await c.post("/v1/generations", json={"prompt": f"{i}"})
                assert poor.status_code == 402, poor.text
            bad = await c.post("/v1/generations", json={"prompt": "x", "provider": "nope"})
            assert bad.status_code == 422
            await runtime.store.grant_credits(account.id, 10, reason="test", actor="test")
            codes = [(await c.post("/v1/generations", json={"prompt": f"ok{i}"})).status_code
                     for i in range(3)]
            assert codes == [202, 202, 429]
    finally:
        await runtime.close()


async def test_admin_patch_clears_email_and_checks_webhook_urls(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/admin/accounts", json={"name": "mailer", "email": "a@example.com"})
    assert (await client.get("/admin/accounts/mailer")).json()["email"] == "a@example.com"
    cleared = await client.patch("/admin/accounts/mailer", json={"email": None})
    assert cleared.status_code == 200 and cleared.json()["email"] is None
    unsafe = await client.patch("/admin/accounts/mailer",
                                json={"webhook_url": "http://169.254.169.254/hook"})
    assert unsafe.status_code == 422
    assert unsafe.json()["error"]["field"] == "webhook_url"
    assert unsafe.json()["error"]["code"] == "unsafe_url"
    untouched = await client.patch("/admin/accounts/mailer", json={"tier": "PRO"})
    assert untouched.json()["tier"] == "PRO" and untouched.json()["email"] is None


# Cancels and budgets under concurrency ---------------------------------------------------


@pytest.fixture
def slow_settings(make_settings: Any) -> Settings:
    return make_settings(
        providers={"slow": {"kind": "placeholder", "latency_ms": 1500, "price_usd": "0.04"}},
        routing={"default": ["slow"]},
    )


async def _wait_status(runtime: Runtime, gen_id: str, *statuses: str) -> str:
    for _ in range(400):
        status = (await runtime.store.get_generation(gen_id)).status.value
        if status in statuses:
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"{gen_id} stayed {status}")


async def test_cancelling_a_running_job_refunds_it_once(slow_settings: Settings) -> None:
    from pixelgate.core.models import GenerationRequest
    from pixelgate.core.pipeline import Caller

    runtime = await Runtime.open(slow_settings)
    await runtime.start_worker()
    try:
        account = await runtime.store.create_account("c", tier="PRO", credits=5)
        caller = Caller(account_id=account.id, account_name="c")
        admitted = await runtime.pipeline.admit(caller, GenerationRequest(prompt="x"))
        gen_id = admitted.generation.id
        await _wait_status(runtime, gen_id, "PROCESSING")
        assert (await runtime.store.get_account(account.id)).credits == 4
        await runtime.pipeline.cancel(gen_id, account.id)
        assert await _wait_status(runtime, gen_id, "CANCELED") == "CANCELED"
        await asyncio.sleep(1.8)  # past the provider's answer: it must not be booked
        view = await runtime.store.get_generation(gen_id)
        assert view.status.value == "CANCELED" and view.images == []
        assert (await runtime.store.get_account(account.id)).credits == 5
        kinds = Counter(e.kind for e in await _ledger(runtime, account.id))
        assert kinds == {"grant": 1, "debit": 1, "refund": 1}
        await _assert_ledger_consistent(runtime, account.id)
    finally:
        await runtime.close()


async def test_a_cancel_racing_success_charges_or_refunds_each_job_exactly_once(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 jobs wait inside their provider; their answers and their cancels are released
    together: every job ends SUCCEEDED and charged, or CANCELED and refunded once."""
    from pixelgate.core.models import GenerationRequest
    from pixelgate.core.pipeline import Caller
    from tests.fakes import ScriptedProvider, register_scripted_provider

    logs = register_scripted_provider(monkeypatch)
    settings = make_settings(
        providers={"gated": {"kind": "scripted", "script": ["gate"], "saves_job": False}},
        routing={"default": ["gated"]},
    )
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    try:
        account = await runtime.store.create_account("r", tier="ENTERPRISE", credits=100)
        caller = Caller(account_id=account.id, account_name="r")
        ids = [
            (
                await runtime.pipeline.admit(
                    caller, GenerationRequest(prompt=f"p{i}", width=32, height=32)
                )
            ).generation.id
            for i in range(40)
        ]
        for _ in range(1000):
            if "gated" in logs and logs["gated"].in_flight == 40:
                break
            await asyncio.sleep(0.01)
        assert logs["gated"].in_flight == 40

        async def cancel(gen_id: str, delay_s: float) -> None:
            await asyncio.sleep(delay_s)
            try:
                await runtime.pipeline.cancel(gen_id, account.id)
            except Exception as exc:  # already finished: 409 is the right answer
                assert getattr(exc, "code", "") == "already_finished", exc

        async def release(delay_s: float) -> None:
            await asyncio.sleep(delay_s)
            ScriptedProvider.gate("gated").set()

        # ten are cancelled while they wait; then the answers are released while
        # the other thirty cancels arrive, one every 2 ms
        await asyncio.gather(*(cancel(g, 0) for g in ids[:10]))
        await asyncio.gather(release(0), *(cancel(g, 0.002 * i) for i, g in enumerate(ids[10:])))
        finals = {g: await _wait_status(runtime, g, "SUCCEEDED", "CANCELED") for g in ids}
        entries = await _ledger(runtime, account.id)
        refunded = {e.generation_id for e in entries if e.kind == "refund"}
        assert refunded == {g for g, s in finals.items() if s == "CANCELED"}
        assert Counter(e.kind for e in entries)["debit"] == 40
        succeeded = sum(1 for s in finals.values() if s == "SUCCEEDED")
        assert (await runtime.store.get_account(account.id)).credits == 100 - succeeded
        for gen_id, status in finals.items():
            images = (await runtime.store.get_generation(gen_id)).images
            assert bool(images) == (status == "SUCCEEDED")
        await _assert_ledger_consistent(runtime, account.id)
        assert all(finals[g] == "CANCELED" for g in ids[:10])
    finally:
        await runtime.close()


async def test_concurrent_admissions_never_pass_the_daily_budget(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await runtime.store.create_account("frugal", tier="ENTERPRISE", credits=1000)
    await runtime.store.update_account(account.id, daily_budget_usd=Decimal("0.20"))
    _, key = await runtime.store.create_key(account.id)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"prompt": "x", "provider": "priced", "width": 16, "height": 16}
    answers = await asyncio.gather(
        *(client.post("/v1/generations", headers=headers, json=body) for _ in range(40))
    )
    codes = Counter(a.status_code for a in answers)
    assert codes == {202: 5, 402: 35}  # 5 x $0.04 = the $0.20 budget
    assert await _generation_count(runtime, account.id) == 5
    assert Counter(e.kind for e in await _ledger(runtime, account.id))["debit"] == 5


@pytest.mark.parametrize("refusal", ["credits", "quota"])
async def test_a_402_or_429_writes_no_row_and_no_ledger_entry(
    client: httpx.AsyncClient, make_account: Any, runtime: Runtime, refusal: str
) -> None:
    credits, tier = (1, "PRO") if refusal == "credits" else (100, "FREE")
    caller, headers = await make_account("edge", credits=credits, tier=tier)
    first = await client.post("/v1/generations", headers=headers, json={"prompt": "one"})
    assert first.status_code == 202
    rows, entries = await _generation_count(runtime, caller.account_id), await _ledger(
        runtime, caller.account_id
    )
    refused = await client.post("/v1/generations", headers=headers, json={"prompt": "two"})
    assert refused.status_code == (402 if refusal == "credits" else 429), refused.text
    assert await _generation_count(runtime, caller.account_id) == rows == 1
    assert len(await _ledger(runtime, caller.account_id)) == len(entries)
