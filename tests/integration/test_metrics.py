"""``GET /metrics``: Prometheus exposition behind the admin key, or on ``metrics_bind``."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pixelgate.api.app import create_app
from pixelgate.config import Settings
from pixelgate.runtime import Runtime
from tests.conftest import admin_client

WAIT = {"Prefer": "wait=10"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        providers={
            "fast": {"kind": "placeholder"},
            "flaky": {"kind": "placeholder", "fail_rate": 1.0},
        },
        routing={
            "default": ["fast"],
            "retry": {"attempts": 1},
            "breaker": {"failure_threshold": 3, "cooldown_s": 600},
        },
    )


async def scrape(client: httpx.AsyncClient) -> dict[Any, float]:
    answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return samples(answer.text)


async def test_metrics_need_an_admin_key(
    client: httpx.AsyncClient, make_account: Callable[..., Any]
) -> None:
    _, plain = await make_account("plain")
    assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 401
    answer = await client.get("/metrics", headers=plain)
    assert answer.status_code == 403
    assert answer.json()["error"]["request_id"]


async def test_http_requests_are_counted_by_route_template(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    made = await client.post("/v1/generations", json={"prompt": "a cat"}, headers=WAIT)
    gen_id = made.json()["id"]
    assert (await client.get(f"/v1/generations/{gen_id}")).status_code == 200
    assert (await client.get("/no/such/route")).status_code == 404
    after = await scrape(client)
    template = "/v1/generations/{generation_id}"
    assert (
        value(after, "pixelgate_http_requests_total", route=template, method="GET", status="200")
        - value(before, "pixelgate_http_requests_total", route=template, method="GET", status="200")
        == 1
    )
    assert not [k for k in after if gen_id in str(k)]  # never the raw path
    assert value(after, "pixelgate_http_requests_total", route="unmatched", status="404") >= 1
    count = "pixelgate_http_request_duration_seconds_count"
    assert (
        value(after, count, route="/v1/generations", method="POST")
        - value(before, count, route="/v1/generations", method="POST")
        == 1
    )


async def test_generations_providers_money_and_breakers(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    ok = await client.post("/v1/generations", json={"prompt": "a cat"}, headers=WAIT)
    assert ok.json()["status"] == "SUCCEEDED"
    for _ in range(3):
        bad = await client.post(
            "/v1/generations", json={"prompt": "a dog", "provider": "flaky"}, headers=WAIT
        )
        assert bad.json()["status"] == "FAILED"
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        delta("pixelgate_generations_total", status="SUCCEEDED", provider="fast", source="native")
        == 1
    )
    assert delta("pixelgate_generations_total", status="FAILED", provider="flaky") == 3
    assert delta("pixelgate_provider_request_duration_seconds_count", provider="fast") == 1
    assert delta("pixelgate_provider_errors_total", provider="flaky") == 3
    assert delta("pixelgate_credits_spent_total", provider="fast") == ok.json()["cost"]["credits"]
    assert delta("pixelgate_cost_usd_total", provider="flaky") == 0
    # computed at scrape time: three failures in a row opened flaky's breaker
    assert value(after, "pixelgate_breaker_state", provider="flaky") == 2
    assert value(after, "pixelgate_breaker_state", provider="fast") == 0
    assert value(after, "pixelgate_queue_depth", status="PENDING") == 0
    assert ("pixelgate_queue_oldest_age_seconds", frozenset({("status", "PROCESSING")})) in after


async def test_queue_depth_and_age_are_read_at_scrape_time(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(providers={"fast": {"kind": "placeholder"}})
    runtime = await Runtime.open(settings)  # no worker: admitted jobs wait
    app = create_app(settings, runtime=runtime, run_worker=False)
    try:
        async with admin_client(app) as client:
            for _ in range(2):
                await client.post("/v1/generations", json={"prompt": "waiting"})
            found = await scrape(client)
            assert value(found, "pixelgate_queue_depth", status="PENDING") == 2
            assert value(found, "pixelgate_queue_oldest_age_seconds", status="PENDING") > 0
    finally:
        await runtime.close()


async def test_cache_hits_are_counted(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    body = {"prompt": "same", "seed": 7, "cache": True}
    await client.post("/v1/generations", json=body, headers=WAIT)
    again = await client.post("/v1/generations", json=body, headers=WAIT)
    assert again.json()["status"] == "SUCCEEDED"
    after = await scrape(client)
    hit = "pixelgate_cache_hits_total"
    assert value(after, hit, outcome="miss") - value(before, hit, outcome="miss") == 1
    assert value(after, hit, outcome="hit") - value(before, hit, outcome="hit") == 1


@pytest.fixture
async def bound(make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(make_settings(metrics_bind="127.0.0.1:0"))
    await runtime.start_observability()
    try:
        yield runtime
    finally:
        await runtime.close()


async def test_metrics_bind_serves_metrics_without_auth(bound: Runtime) -> None:
    assert bound.metrics_server is not None
    port = bound.metrics_server.bound_port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
        answer = await plain.get("/metrics")
        assert answer.status_code == 200
        assert "pixelgate_queue_depth" in answer.text
        assert "pixelgate_breaker_state" in answer.text
        assert (await plain.get("/v1/generations")).status_code == 404  # nothing else


async def test_metrics_bind_taken_port_is_a_clear_error(
    bound: Runtime, make_settings: Callable[..., Settings]
) -> None:
    from pixelgate.errors import ConfigError
    from pixelgate.observability.server import MetricsServer

    assert bound.metrics_server is not None
    taken = MetricsServer(bound, f"127.0.0.1:{bound.metrics_server.bound_port}")
    with pytest.raises(ConfigError, match="metrics_bind"):
        await taken.start()


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pixelgate.json"


async def test_the_grafana_dashboard_uses_only_exposed_metrics(client: httpx.AsyncClient) -> None:
    panels = json.loads(DASHBOARD.read_bytes())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(pixelgate_[a-z_]+|process_[a-z_]+)", e)}
    exposed = {name for name, _ in (await scrape(client))}
    text = (await client.get("/metrics")).text
    declared = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    missing = {m for m in used if m not in exposed and m.removesuffix("_bucket") not in declared}
    assert used and not missing, missing
