"""Chaos suite: routing, fallback, retries, breakers, racing, hedging, outbound limits,
the default image and hot configuration, through the HTTP API on named placeholder
instances and scripted provider fakes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pixelgate.config import Settings
from pixelgate.runtime import Runtime
from tests.conftest import ADMIN_KEY
from tests.fakes import ScriptLog, register_scripted_provider

WAIT = {"Prefer": "wait=20"}
FAST_RETRY = {"attempts": 1}


class FakeTime:
    """Monotonic time the test moves; sleeping returns at once and moves it on."""

    def __init__(self) -> None:
        self.t = 10_000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def install(self, runtime: Runtime) -> None:
        control = runtime.pipeline.control
        control.clock.now = self.now
        control.clock.sleep = self.sleep


@pytest.fixture
def embedded_clock(backend: str) -> None:
    """Tests that move the routing's clock: with scale-out the breakers' and pauses' time
    is Redis's own (their scale-out tests: tests/scaleout/test_breaker_redis.py and
    test_shared_resilience.py)."""
    if backend != "sqlite":
        pytest.skip("moves the in-memory routing clock; scale-out breakers and pauses keep "
                    "Redis time (tests/scaleout/test_breaker_redis.py, test_shared_resilience.py)")


@pytest.fixture(autouse=True)
def logs(monkeypatch: pytest.MonkeyPatch) -> dict[str, ScriptLog]:
    """``kind = "scripted"`` for every test here; what each instance went through."""
    return register_scripted_provider(monkeypatch)


async def generate(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body = {"prompt": "a lighthouse", "width": 64, "height": 64, **body}
    r = await client.post("/v1/generations", json=body, headers=WAIT, timeout=30)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def events(runtime: Runtime, gen_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.data) for e in await runtime.store.events_after(gen_id)]


def entry(body: dict[str, Any], provider: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in body["route"] if e["provider"] == provider)
    return found


# Fallback -------------------------------------------------------------------------------


async def test_a_provider_that_is_down_falls_back_to_the_next(gateway: Any) -> None:
    async with gateway(
        providers={
            "down": {"kind": "placeholder", "fail_rate": 1.0},
            "fast": {"kind": "placeholder"},
        },
        routing={"default": ["down", "fast"], "retry": {"attempts": 2, "base_delay_s": 0.01}},
    ) as (runtime, client):
        body = await generate(client)
        assert body["status"] == "SUCCEEDED" and body["provider"] == "fast"
        down = entry(body, "down")
        assert down["decision"] == "failed" and down["error"] == "provider_unavailable"
        assert [a["outcome"] for a in down["attempts"]] == ["failed", "failed"]
        assert entry(body, "fast")["decision"] == "succeeded"
        types = [t for t, _ in await events(runtime, body["id"])]
        assert types.count("provider_selected") == 2
        assert types.count("retrying") == 1 and types.count("attempt_failed") == 1
        first = next(d for t, d in await events(runtime, body["id"]) if t == "provider_selected")
        assert first["plan"]["candidates"] == ["down", "fast"]


# Circuit breaker ---------------------------------------------------------------------------


async def test_breaker_opens_skips_the_provider_then_a_probe_closes_it(
    gateway: Any, logs: dict[str, ScriptLog], embedded_clock: None
) -> None:
    fake = FakeTime()
    async with gateway(
        providers={
            "a": {"kind": "scripted", "script": ["transient"]},
            "b": {"kind": "placeholder"},
        },
        routing={
            "default": ["a", "b"],
            "retry": FAST_RETRY,
            "breaker": {"failure_threshold": 2, "cooldown_s": 30, "cooldown_jitter": 0},
        },
    ) as (runtime, client):
        fake.install(runtime)
        await generate(client)
        second = await generate(client)
        assert second["provider"] == "b"
        opened = [d for t, d in await events(runtime, second["id"]) if t == "breaker"]
        assert opened == [
            {"provider": "a", "from": "closed", "to": "open", "reason": opened[0]["reason"]}
        ]
        assert logs["a"].calls == 2

        skipped = await generate(client)
        assert skipped["provider"] == "b" and logs["a"].calls == 2
        assert entry(skipped, "a")["decision"] == "skipped"
        assert "circuit breaker open" in entry(skipped, "a")["reason"]

        fake.t += 31
        runtime.providers.get("a").settings.script = ["ok"]  # type: ignore[attr-defined]
        probed = await generate(client)
        assert probed["provider"] == "a" and logs["a"].calls == 3
        moves = [
            (d["from"], d["to"]) for t, d in await events(runtime, probed["id"]) if t == "breaker"
        ]
        assert moves == [("open", "half_open"), ("half_open", "closed")]
        state = (await client.get("/admin/circuit-breaker")).json()
        assert state["breakers"]["a"]["state"] == "closed"


async def test_only_transient_failures_count_for_the_breaker(gateway: Any) -> None:
    async with gateway(
        providers={"refusing": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "refused"}},
        routing={"default": ["refusing"], "breaker": {"failure_threshold": 1}},
    ) as (_, client):
        for _ in range(3):
            body = await generate(client)
            assert body["error"]["code"] == "content_refused"
        state = (await client.get("/admin/circuit-breaker")).json()
        assert state["breakers"]["refusing"]["state"] == "closed"


# Retries ---------------------------------------------------------------------------------


async def test_a_429_with_retry_after_3s_is_waited_out_not_hammered(
    gateway: Any, logs: dict[str, ScriptLog], embedded_clock: None
) -> None:
    fake = FakeTime()
    async with gateway(
        providers={"busy": {"kind": "scripted", "script": ["rate_limited:3", "ok"]}},
        routing={"default": ["busy"], "retry": {"attempts": 3, "base_delay_s": 1.0}},
    ) as (runtime, client):
        fake.install(runtime)
        body = await generate(client)
        assert body["status"] == "SUCCEEDED" and body["retry_count"] == 1
        assert logs["busy"].calls == 2  # one 429, one success: no hammering
        assert fake.slept and fake.slept[0] >= 3.0
        retrying = [d for t, d in await events(runtime, body["id"]) if t == "retrying"]
        assert retrying[0]["retry_after_s"] == 3.0 and retrying[0]["delay_s"] >= 3.0
        assert [a["outcome"] for a in entry(body, "busy")["attempts"]] == ["failed", "succeeded"]


async def test_a_retry_after_longer_than_allowed_moves_on(
    gateway: Any, logs: dict[str, ScriptLog]
) -> None:
    async with gateway(
        providers={
            "busy": {"kind": "scripted", "script": ["rate_limited:600"]},
            "fast": {"kind": "placeholder"},
        },
        routing={"default": ["busy", "fast"], "retry": {"max_retry_after_s": 60}},
    ) as (runtime, client):
        body = await generate(client)
        assert body["provider"] == "fast" and logs["busy"].calls == 1
        final = [d for t, d in await events(runtime, body["id"]) if t == "attempt_failed"]
        assert "too long" in final[0]["final"]


async def test_a_refusal_is_not_retried_nor_sent_elsewhere_unless_asked(gateway: Any) -> None:
    async with gateway(
        providers={
            "refusing": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "refused"},
            "fast": {"kind": "placeholder"},
        },
        routing={"default": ["refusing", "fast"], "retry": {"attempts": 3, "base_delay_s": 0.01}},
    ) as (runtime, client):
        body = await generate(client)
        assert body["status"] == "FAILED" and body["error"]["code"] == "content_refused"
        assert len(entry(body, "refusing")["attempts"]) == 1
        assert entry(body, "fast")["decision"] == "not_tried"
        types = [t for t, _ in await events(runtime, body["id"])]
        assert "retrying" not in types and types.count("provider_selected") == 1

        asked = await generate(client, fallback_on_refusal=True)
        assert asked["status"] == "SUCCEEDED" and asked["provider"] == "fast"
        # an ordered list of the request's own is its policy ("explicit", the default)
        listed = await generate(client, providers=["refusing", "fast"])
        assert listed["provider"] == "fast"

        await client.put("/admin/config", json={"routing": {"fallback_on_refusal": "always"}})
        assert (await generate(client))["provider"] == "fast"


# Racing and hedging --------------------------------------------------------------------------


async def test_racing_returns_the_fastest_and_cancels_the_rest(
    gateway: Any, logs: dict[str, ScriptLog]
) -> None:
    async with gateway(
        providers={
            "slowjob": {"kind": "scripted", "script": ["ok:10"], "price_usd": "0.03"},
            "fast": {"kind": "placeholder"},
        },
    ) as (runtime, client):
        started = time.monotonic()
        body = await generate(client, providers=["slowjob", "fast"], race=2)
        assert time.monotonic() - started < 8
        assert body["status"] == "SUCCEEDED" and body["provider"] == "fast"
        loser = entry(body, "slowjob")
        assert loser["decision"] == "cancelled"
        assert loser["cost_usd"] == "0.03" and loser["cost_basis"] == "estimate"
        for _ in range(50):  # the provider-side cancel runs in the background
            if logs["slowjob"].cancelled:
                break
            await asyncio.sleep(0.02)
        assert logs["slowjob"].cancelled == ["slowjob-job-1"]
        race = next(d for t, d in await events(runtime, body["id"]) if t == "race")
        assert race["winner"] == "fast" and race["losers_cost_usd"] == "0.03"


async def test_hedging_starts_the_second_only_after_the_delay(
    gateway: Any, logs: dict[str, ScriptLog]
) -> None:
    async with gateway(
        providers={
            "sluggish": {"kind": "scripted", "script": ["ok:4"]},
            "backup": {"kind": "scripted"},
            "prompt": {"kind": "scripted", "script": ["ok:0.05"]},
            "spare": {"kind": "scripted"},
        },
    ) as (_, client):
        body = await generate(client, providers=["sluggish", "backup"], hedge_delay_s=0.3)
        assert body["provider"] == "backup"
        gap = logs["backup"].started[0] - logs["sluggish"].started[0]
        assert 0.28 <= gap < 3.5
        assert entry(body, "backup")["how"] == "hedge"
        assert entry(body, "sluggish")["decision"] == "cancelled"

        quick = await generate(client, providers=["prompt", "spare"], hedge_delay_s=2)
        assert quick["provider"] == "prompt" and "spare" not in logs
        assert entry(quick, "spare")["decision"] == "not_tried"


async def test_hedging_waits_for_the_observed_p90_latency_by_default(
    gateway: Any, logs: dict[str, ScriptLog]
) -> None:
    async with gateway(
        providers={
            "usual": {"kind": "scripted", "script": ["ok:0.1", "ok:0.1", "ok:0.1", "ok:4"]},
            "backup": {"kind": "scripted"},
        },
        routing={
            "default": ["usual", "backup"],
            "hedge": {"enabled": True, "min_delay_s": 0.05, "default_delay_s": 5},
        },
    ) as (_, client):
        for _ in range(3):
            assert (await generate(client))["provider"] == "usual"
        assert "backup" not in logs
        body = await generate(client)
        assert body["provider"] == "backup"
        gap = logs["backup"].started[0] - logs["usual"].started[3]
        assert 0.09 <= gap < 2.0  # ~p90 of 0.1 s, not the 5 s default


# Outbound limits -------------------------------------------------------------------------------


async def test_an_outbound_limit_of_2_holds_10_jobs_to_2_at_a_time(
    gateway: Any, logs: dict[str, ScriptLog]
) -> None:
    async with gateway(
        providers={"gated": {"kind": "scripted", "script": ["ok:0.15"]}},
        routing={"default": ["gated"], "outbound": {"gated": {"concurrency": 2}}},
    ) as (runtime, client):
        bodies = await asyncio.gather(*(generate(client, prompt=f"job {i}") for i in range(10)))
        assert [b["status"] for b in bodies] == ["SUCCEEDED"] * 10
        assert logs["gated"].calls == 10 and logs["gated"].max_in_flight == 2
        waited = []
        for body in bodies:
            waited += [d for t, d in await events(runtime, body["id"]) if t == "waiting"]
        assert waited and {w["kind"] for w in waited} == {"concurrency"}
        assert "2 of 2 concurrent" in waited[0]["reason"]


# All fail, the default image ------------------------------------------------------------------


async def test_all_failing_is_failed_with_every_attempt_and_the_default_image(
    gateway: Any,
) -> None:
    async with gateway(
        providers={
            "flaky": {"kind": "placeholder", "fail_rate": 1.0},
            "stuck": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "timeout"},
        },
        routing={"default": ["flaky", "stuck"], "retry": {"attempts": 2, "base_delay_s": 0.01}},
    ) as (runtime, client):
        plain = await generate(client)
        assert plain["status"] == "FAILED" and plain["images"] == []
        assert plain["error"]["code"] == "provider_timeout"

        body = await generate(client, fallback_image=True, width=80, height=48)
        assert body["status"] == "FAILED"
        assert body["error"]["code"] == "provider_timeout" and body["error"]["message"]
        assert body["provider"] == "default" and body["fallback_image"] is True
        [image] = body["images"]
        assert (image["width"], image["height"]) == (80, 48)
        fetched = await client.get(image["url"].split("testserver", 1)[-1])
        assert fetched.status_code in (200, 307)
        attempts = [
            (d["provider"], d["attempt"])
            for t, d in await events(runtime, body["id"])
            if t in ("retrying", "attempt_failed")
        ]
        assert attempts == [("flaky", 1), ("flaky", 2), ("stuck", 1), ("stuck", 2)]
        assert [entry(body, p)["decision"] for p in ("flaky", "stuck")] == ["failed", "failed"]


async def test_the_default_image_can_be_switched_off(gateway: Any) -> None:
    async with gateway(
        providers={"flaky": {"kind": "placeholder", "fail_rate": 1.0}},
        routing={"default": ["flaky"], "retry": FAST_RETRY, "fallback_image": False},
    ) as (_, client):
        body = await generate(client, fallback_image=True)
        assert body["status"] == "FAILED" and body["images"] == []
        seed = await client.post("/images/generate", json={"prompt": "x"})
        assert seed.status_code == 502 and seed.json()["success"] is False


async def test_nothing_available_fails_with_the_reasons(gateway: Any) -> None:
    async with gateway(
        providers={"flaky": {"kind": "placeholder", "fail_rate": 1.0}},
        routing={"default": ["flaky"], "retry": FAST_RETRY, "breaker": {"failure_threshold": 1}},
    ) as (_, client):
        await generate(client)
        body = await generate(client)
        assert body["status"] == "FAILED"
        assert body["error"]["code"] == "provider_unavailable"
        assert "circuit breaker open" in body["error"]["message"]


# Cost, policy and per-account routing -----------------------------------------------------------


async def test_cost_cap_and_policy_choose_among_providers(gateway: Any) -> None:
    async with gateway(
        providers={
            "dear": {"kind": "scripted", "price_usd": "0.50"},
            "cheap": {"kind": "scripted", "price_usd": "0.01"},
        },
        routing={"default": ["dear", "cheap"]},
    ) as (_, client):
        assert (await generate(client))["provider"] == "dear"
        capped = await generate(client, max_cost_per_image="0.10")
        assert capped["provider"] == "cheap"
        assert "max_cost_per_image" in entry(capped, "dear")["reason"]
        by_cost = await generate(client, policy="cost")
        assert by_cost["provider"] == "cheap"
        assert entry(by_cost, "cheap")["step"] == "policy:cost"


async def test_estimates_price_the_provider_the_policy_will_use(gateway: Any) -> None:
    """/v1/estimate and admission's estimated_usd follow the same plan as the run."""
    async with gateway(
        providers={
            "dear": {"kind": "scripted", "price_usd": "0.50"},
            "cheap": {"kind": "scripted", "price_usd": "0.10"},
        },
        routing={"default": ["dear", "cheap"]},
    ) as (_, client):
        body = {"prompt": "a lighthouse", "width": 64, "height": 64, "policy": "cost"}
        estimate = await client.post("/v1/estimate", json=body)
        assert estimate.status_code == 200, estimate.text
        assert estimate.json()["provider"] == "cheap"
        assert estimate.json()["usd"] == "0.1"
        done = await generate(client, policy="cost")
        assert done["provider"] == "cheap"
        assert done["cost"]["estimated_usd"] == "0.1"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "template": "t"}, "prompt"),
        ({"template": "nosuch"}, "template"),
        ({"prompt": "x", "reference_image_url": "http://127.0.0.1/a.png"}, "reference_image_url"),
    ],
)
async def test_the_estimate_refuses_what_admission_refuses(
    gateway: Any, body: dict[str, Any], field: str
) -> None:
    async with gateway() as (runtime, client):
        admitted = await client.post("/v1/generations", json=body)
        estimated = await client.post("/v1/estimate", json=body)
        assert admitted.status_code == estimated.status_code == 422, estimated.text
        assert admitted.json()["error"]["field"] == estimated.json()["error"]["field"]
        assert field in estimated.json()["error"]["field"]
        assert await runtime.store.list_generations(account_id=None) == []


async def test_an_unknown_price_is_never_free_under_a_cap_or_a_budget(gateway: Any) -> None:
    async with gateway(
        providers={
            "mystery": {"kind": "scripted", "pricing": "unknown"},
            "priced": {"kind": "scripted", "price_usd": "0.05"},
        },
        routing={"default": ["mystery", "priced"]},
    ) as (runtime, client):
        # no cap, no budget: usable, its cost unknown (not $0)
        free = await generate(client)
        assert free["provider"] == "mystery"
        assert free["cost"]["estimated_usd"] is None
        # a cost cap skips it, and the trace says why
        capped = await generate(client, max_cost_per_image="1")
        assert capped["provider"] == "priced"
        skipped = entry(capped, "mystery")
        assert skipped["decision"] == "skipped" and skipped["code"] == "price_unknown"
        # so does a daily budget
        account = await runtime.store.create_account("budgeted", tier="PRO", credits=100)
        await runtime.store.update_account(account.id, daily_budget_usd=Decimal("10"))
        _, key = await runtime.store.create_key(account.id)
        mine = {"Authorization": f"Bearer {key}"}
        r = await client.post(
            "/v1/generations",
            json={"prompt": "x", "width": 64, "height": 64},
            headers={**mine, **WAIT},
        )
        assert r.status_code == 200 and r.json()["provider"] == "priced", r.text
        assert r.json()["cost"]["estimated_usd"] == "0.05"
        # with nothing priced left, admission refuses naming the reason: nothing written
        only = await client.post(
            "/v1/generations",
            json={"prompt": "x", "width": 64, "height": 64, "provider": "mystery"},
            headers=mine,
        )
        assert only.status_code == 422, only.text
        assert only.json()["error"]["code"] == "price_unknown"
        assert len(await runtime.store.list_generations(account_id=account.id)) == 1


async def test_a_price_table_defect_is_not_swallowed(gateway: Any) -> None:
    async with gateway(
        providers={"buggy": {"kind": "scripted", "pricing": "broken"}},
        routing={"default": ["buggy"]},
    ) as (_, client):
        with pytest.raises(RuntimeError, match="defect in the price table"):
            await client.post("/v1/estimate", json={"prompt": "x"})


async def test_an_account_has_its_own_routing(gateway: Any, logs: dict[str, ScriptLog]) -> None:
    async with gateway(
        providers={"main": {"kind": "scripted"}, "own": {"kind": "scripted"}},
        routing={"default": ["main"]},
    ) as (runtime, client):
        account = await runtime.store.create_account("acme", tier="ENTERPRISE")
        _, key = await runtime.store.create_key(account.id)
        bad = await client.put("/admin/accounts/acme/routing", json={"preferred": ["ghost"]})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "preferred"
        r = await client.put(
            "/admin/accounts/acme/routing",
            json={"preferred": ["own"], "outbound": {"own": {"concurrency": 1}}},
        )
        assert r.status_code == 200, r.text
        assert (await client.get("/admin/accounts/acme/routing")).json()["routing"][
            "preferred"
        ] == ["own"]
        acme = {"Authorization": f"Bearer {key}"}
        mine = await client.post(
            "/v1/generations",
            json={"prompt": "x", "width": 32, "height": 32},
            headers={**acme, **WAIT},
        )
        assert mine.json()["provider"] == "own"
        assert (await generate(client))["provider"] == "main"


# Hot configuration -------------------------------------------------------------------------


async def test_a_hot_config_change_applies_to_the_next_job_without_a_restart(
    gateway: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        providers={"fast": {"kind": "placeholder"}, "other": {"kind": "placeholder"}},
        routing={"default": ["fast"]},
    )
    async with gateway(settings) as (_, client):
        assert (await generate(client))["provider"] == "fast"
        current = (await client.get("/admin/config")).json()
        assert current["version"] == 0 and current["chain"] == ["fast"]
        r = await client.put("/admin/config", json={"routing": {"default": ["other"]}})
        assert r.status_code == 200, r.text
        assert r.json()["version"] >= 1 and r.json()["chain"] == ["other"]
        assert (await generate(client))["provider"] == "other"
        shown = (await client.get("/admin/config", params={"history": 5})).json()
        assert shown["overrides"] == {"routing": {"default": ["other"]}}
        assert shown["history"][0]["actor"] == "admin"
    # the stored version survives a restart
    async with gateway(settings) as (_, client):
        assert (await generate(client))["provider"] == "other"


async def test_hot_config_is_validated_and_versioned(gateway: Any) -> None:
    async with gateway(
        providers={"fast": {"kind": "placeholder"}}, routing={"default": ["fast"]}
    ) as (runtime, client):
        bad = await client.put("/admin/config", json={"routing": {"retry": {"attempts": 0}}})
        assert bad.status_code == 422
        assert bad.json()["error"]["field"] == "routing.retry.attempts"
        unknown = await client.put("/admin/config", json={"routing": {"default": ["nope"]}})
        assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "routing.default"
        first = await client.put(
            "/admin/config", json={"routing": {"breaker": {"failure_threshold": 9}}}
        )
        version = first.json()["version"]
        assert first.headers["etag"] == f'"{version}"'
        assert runtime.pipeline.control.breakers.settings.failure_threshold == 9
        stale = await client.put(
            "/admin/config", json={"routing": {}}, headers={"If-Match": str(version - 1)}
        )
        assert stale.status_code == 409
        fresh = await client.put(
            "/admin/config", json={"routing": {}}, headers={"If-Match": f'"{version}"'}
        )
        assert fresh.status_code == 200 and fresh.json()["version"] == version + 1
        assert runtime.pipeline.control.breakers.settings.failure_threshold == 5


# Admin routes and /config -------------------------------------------------------------------------


ADMIN_ROUTES = [
    ("GET", "/admin/config", None),
    ("PUT", "/admin/config", {"routing": {}}),
    ("GET", "/admin/circuit-breaker", None),
    ("POST", "/admin/circuit-breaker", {"action": "reset-all"}),
    ("GET", "/admin/providers", None),
    ("GET", "/admin/status", None),
    ("GET", "/admin/accounts/admin/routing", None),
]


async def test_admin_routes_need_an_admin_key(client: httpx.AsyncClient, make_account: Any) -> None:
    _, user = await make_account("user")
    for method, path, body in ADMIN_ROUTES:
        as_user = await client.request(method, path, json=body, headers=user)
        assert as_user.status_code == 403, (method, path)
        anonymous = await client.request(method, path, json=body, headers={"Authorization": ""})
        assert anonymous.status_code == 401, (method, path)
        assert (await client.request(method, path, json=body)).status_code == 200, (method, path)


async def test_public_config_and_admin_output_show_no_secrets(
    gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-0123456789-SECRET"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    async with gateway(
        providers={
            "fast": {"kind": "placeholder"},
            "compat": {
                "kind": "openai_compatible",
                "api_key": secret,
                "base_url": "https://user:hunter2@images.internal.example",
            },
        },
        routing={"default": ["fast"]},
    ) as (_, client):
        public = await client.get("/config")
        assert public.status_code == 200
        body = public.json()
        assert body["routing"]["chain"] == ["fast"]
        assert body["providers"]["openai"]["configured"] is True
        assert body["r2"]["cacheControl"].endswith("immutable")
        for path in ("/config", "/admin/config", "/admin/status", "/admin/circuit-breaker"):
            text = (await client.get(path)).text
            for leak in (secret, ADMIN_KEY, "hunter2"):
                assert leak not in text, (path, leak)
        text = (await client.get("/admin/providers", params={"check": False})).text
        assert secret not in text and "hunter2" not in text


async def test_circuit_breaker_admin_routes(gateway: Any) -> None:
    async with gateway(
        providers={"flaky": {"kind": "placeholder", "fail_rate": 1.0}},
        routing={"default": ["flaky"], "retry": FAST_RETRY, "breaker": {"failure_threshold": 1}},
    ) as (_, client):
        await generate(client)
        state = (await client.get("/admin/circuit-breaker")).json()
        assert state["breakers"]["flaky"]["state"] == "open"
        assert state["settings"]["failure_threshold"] == 1
        for body, field in (
            ({"action": "explode"}, "action"),
            ({}, "action"),
            ({"action": "reset"}, "provider"),
            ({"action": "reset", "provider": "ghost"}, "provider"),
        ):
            r = await client.post("/admin/circuit-breaker", json=body)
            assert r.status_code == 400, body
            assert r.json()["error"]["field"] == field
        r = await client.post(
            "/admin/circuit-breaker", json={"action": "reset", "provider": "flaky"}
        )
        assert r.status_code == 200 and r.json()["reset"] == ["flaky"]
        assert r.json()["breakers"]["flaky"]["state"] == "closed"
        await generate(client)
        r = await client.post("/admin/circuit-breaker", json={"action": "reset-all"})
        assert r.json()["reset"] == ["flaky"]


async def test_admin_providers_and_status_report_recent_attempts(gateway: Any) -> None:
    async with gateway(
        providers={
            "fast": {"kind": "placeholder"},
            "flaky": {"kind": "placeholder", "fail_rate": 1.0},
        },
        routing={"default": ["fast"], "retry": FAST_RETRY, "breaker": {"failure_threshold": 1}},
    ) as (_, client):
        await generate(client)
        await generate(client)
        await generate(client, provider="flaky")
        providers = (await client.get("/admin/providers")).json()["providers"]
        fast = providers["fast"]
        assert fast["recent"]["attempts"] == 2 and fast["recent"]["success_rate"] == 1.0
        assert fast["recent"]["latency_ms"]["p50"] is not None
        assert fast["health"]["healthy"] is True and fast["circuit_breaker"]["state"] == "closed"
        assert fast["in_chain"] is True
        flaky = providers["flaky"]
        assert flaky["recent"]["success_rate"] == 0.0
        assert flaky["recent"]["errors"] == {"provider_unavailable": 1}
        assert flaky["circuit_breaker"]["state"] == "open"
        status = (await client.get("/admin/status")).json()
        assert status["status"] == "degraded"
        assert status["providers"]["open_breakers"] == ["flaky"]
        assert status["providers"]["usable"] == ["fast"]
        # a provider failing every call is not counted healthy (its key alone says nothing)
        assert "flaky" not in status["providers"]["healthy"]
        assert "fast" in status["providers"]["healthy"]
        assert status["config"]["valid"] is True
