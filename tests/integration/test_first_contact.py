"""What a new user meets first on the seed routes: instances, unconfigured models, the
daily reset, and provider health that reflects what really happens."""

from __future__ import annotations

from typing import Any

import httpx

from pixelgate.core.routing import RetryPolicy
from pixelgate.runtime import Runtime

SEED000_CURL = {"prompt": "A beautiful sunset over mountains", "instance_id": "production",
                "project_id": "test"}


async def test_seed000_unknown_instance_says_how_to_create_it(client: httpx.AsyncClient) -> None:
    r = await client.post("/generate", json=SEED000_CURL)
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == "instance_not_found"
    assert body["request_id"] == r.headers["x-request-id"]
    assert "pixelgate accounts create production" in body["error"]
    # following the message makes the seed's own curl work
    assert (await client.post("/admin/accounts", json={"name": "production"})).status_code == 201
    again = await client.post("/generate", json=SEED000_CURL)
    assert again.status_code == 200, again.text
    assert again.json()["r2_path"].startswith("ai/production/test/")


async def test_default_instance_id_is_used_when_the_request_names_none(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.post("/admin/accounts", json={"name": "production"})
    runtime.settings.default_instance = "production"
    r = await client.post("/generate", json={"prompt": "x", "project_id": "p"})
    assert r.status_code == 200, r.text
    assert r.json()["r2_path"].startswith("ai/production/p/")


def test_default_instance_id_variable_is_read(make_settings: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("DEFAULT_INSTANCE_ID", "production")
    assert make_settings().default_instance == "production"


async def test_seed000_model_of_an_unconfigured_provider_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    before = await runtime.store.list_generations(account_id=None, limit=10)
    r = await client.post("/generate", json={"prompt": "x", "model": "ideogram-v2"})
    assert r.status_code == 400
    body = r.json()
    assert body["success"] is False
    assert body["code"] == "provider_not_configured"
    assert "ideogram-v2" in body["error"] and "'ideogram'" in body["error"]
    assert "substitute_unconfigured_models" in body["error"]
    unknown = await client.post("/generate", json={"prompt": "x", "model": "midjourney-v6"})
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown_model"
    # nothing was written
    assert await runtime.store.list_generations(account_id=None, limit=10) == before


async def test_seed000_substitution_when_configured_is_said_in_the_response(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.settings.substitute_unconfigured_models = True
    r = await client.post("/generate", json={"prompt": "x", "model": "ideogram-v2"})
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]
    assert meta["provider"] == "fast"
    assert meta["requested_model"] == "ideogram-v2"
    assert "not configured" in meta["substituted"]


async def test_seed000_model_of_a_configured_provider_runs_there(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/generate", json={"prompt": "x", "model": "slow"})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["provider"] == "slow"
    assert "substituted" not in r.json()["metadata"]


async def test_provider_health_reflects_failures_and_the_breaker(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.pipeline.retry = RetryPolicy(attempts=1)
    before = (await client.get("/api/health/providers")).json()
    assert before["providers"]["flaky"]["status"] == "operational"  # nothing tried yet
    for _ in range(6):
        r = await client.post("/v1/generations", headers={"Prefer": "wait=10"},
                              json={"prompt": "x", "provider": "flaky"})
        assert r.json()["status"] == "FAILED"
    body = (await client.get("/api/health/providers")).json()
    flaky = body["providers"]["flaky"]
    assert flaky["healthy"] is False
    assert flaky["status"] in ("failing", "circuit_open")
    assert flaky["detail"]
    assert body["providers"]["fast"]["healthy"] is True
    assert body["status"] == "degraded"
    native = (await client.get("/v1/providers")).json()["data"]
    assert next(p for p in native if p["name"] == "flaky")["health"]["healthy"] is False


def test_observed_health_orders_check_breaker_then_recent_outcomes() -> None:
    from pixelgate.api.routes.providers import observed_health
    from pixelgate.providers.base import Health
    from pixelgate.resilience.breaker import BreakerSnapshot, BreakerState
    from pixelgate.resilience.stats import ProviderStats

    closed = BreakerSnapshot("p", BreakerState.CLOSED, 0, 0)
    opened = BreakerSnapshot("p", BreakerState.OPEN, 5, 5, last_failure="timeout")

    def stats(ok: int, failed: int) -> ProviderStats:
        n = ok + failed
        return ProviderStats(n, ok, failed, ok / n if n else None, None, None, None, {}, None)

    fine = Health(True)
    assert observed_health(Health(False, "not_configured"), opened, stats(0, 9)).status == (
        "not_configured"
    )
    assert observed_health(fine, opened, stats(9, 0)).status == "circuit_open"
    assert observed_health(fine, closed, stats(0, 3)).healthy is False
    assert observed_health(fine, closed, stats(8, 2)).status == "degraded"
    assert observed_health(fine, closed, stats(0, 2)).status == "operational"  # too few
    assert observed_health(fine, closed, stats(10, 0)) is fine
