"""Alerts (seed 001): a failing placeholder provider raises them once, resolves them once.

Time is an injected clock moved by the test; nothing sleeps for the windows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pixelgate.api.app import create_app
from pixelgate.config import Settings
from pixelgate.core.webhooks import SIGNATURE_HEADER, account_secret, verify
from pixelgate.observability.alerts import AlertManager
from pixelgate.runtime import ADMIN_ACCOUNT, Runtime
from tests.conftest import admin_client
from tests.fakes import LoopbackServer
from tests.integration.test_email import Inbox, _free_port

WAIT = {"Prefer": "wait=10"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[Inbox, int]]:
    from aiosmtpd.controller import Controller

    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def receiver() -> Iterator[LoopbackServer]:
    with LoopbackServer({"/alerts": lambda r: (200, {}, b"ok")}) as server:
        yield server


@pytest.fixture
def settings(make_settings: Callable[..., Settings], receiver: LoopbackServer) -> Settings:
    return make_settings(
        providers={
            "fast": {"kind": "placeholder"},
            "slowish": {"kind": "placeholder", "latency_ms": 30},
            "flaky": {"kind": "placeholder", "fail_rate": 1.0},
        },
        webhook_allow_hosts=["127.0.0.1"],
        routing={
            "default": ["fast"],
            "retry": {"attempts": 1},
            "breaker": {"failure_threshold": 100},
            "alerts": {
                "min_samples": 4,
                "raise_after_s": 60,
                "resolve_after_s": 300,
                "webhook_url": receiver.url("/alerts"),
            },
        },
    )


@pytest.fixture
async def env(
    runtime: Runtime, client: httpx.AsyncClient
) -> AsyncIterator[tuple[AlertManager, Clock, httpx.AsyncClient]]:
    clock = Clock()
    runtime.alerts = AlertManager(runtime, clock=clock)
    yield runtime.alerts, clock, client
    await runtime.alerts.close()


async def _generate(client: httpx.AsyncClient, provider: str, count: int) -> None:
    for _ in range(count):
        answer = await client.post(
            "/v1/generations", json={"prompt": "x", "provider": provider}, headers=WAIT
        )
        assert answer.json()["status"] in ("SUCCEEDED", "FAILED")


async def test_failing_provider_raises_once_and_resolves_once(
    env: tuple[AlertManager, Clock, httpx.AsyncClient], receiver: LoopbackServer, runtime: Runtime
) -> None:
    alerts, clock, client = env
    await _generate(client, "flaky", 5)
    await _generate(client, "fast", 1)

    assert await alerts.evaluate() == []  # breached, but not for raise_after_s yet
    clock.advance(30)
    assert await alerts.evaluate() == []
    clock.advance(31)
    raised = await alerts.evaluate()
    assert {(a["rule"], a["subject"]) for a in raised} == {
        ("provider_success_rate", "flaky"),
        ("error_rate", "*"),
    }
    clock.advance(30)
    assert await alerts.evaluate() == []  # raised once
    active = await alerts.active()
    assert {a["rule"] for a in active} == {"provider_success_rate", "error_rate"}
    flaky = next(a for a in active if a["subject"] == "flaky")
    assert flaky["value"] == 0.0 and flaky["threshold"] == 0.5 and flaky["status"] == "firing"

    # the outage leaves the windows: clear, but resolved only after resolve_after_s
    clock.advance(700)
    assert await alerts.evaluate() == []
    clock.advance(299)
    assert await alerts.evaluate() == []
    clock.advance(2)
    resolved = await alerts.evaluate()
    assert {a["status"] for a in resolved} == {"resolved"} and len(resolved) == 2
    clock.advance(60)
    assert await alerts.evaluate() == []  # resolved once
    assert await alerts.active() == []
    history = await alerts.history()
    assert [a["status"] for a in history] == ["resolved", "resolved"]

    await alerts.close()  # deliveries finished
    posted = [json.loads(r.body) for r in receiver.received]
    assert sorted(p["type"] for p in posted) == ["alert.raised"] * 2 + ["alert.resolved"] * 2
    admin = await runtime.store.ensure_account(ADMIN_ACCOUNT)
    secret = account_secret(runtime.settings, admin.id)
    for request in receiver.received:
        assert verify(secret, request.headers[SIGNATURE_HEADER], request.body)


async def test_a_short_blip_raises_nothing(
    env: tuple[AlertManager, Clock, httpx.AsyncClient],
) -> None:
    alerts, clock, client = env
    await _generate(client, "flaky", 4)
    assert await alerts.evaluate() == []
    clock.advance(700)  # gone before raise_after_s held
    assert await alerts.evaluate() == []
    assert await alerts.history() == []


async def test_n_processes_raise_one_alert(
    env: tuple[AlertManager, Clock, httpx.AsyncClient], runtime: Runtime
) -> None:
    alerts, clock, client = env
    await _generate(client, "flaky", 4)
    others = [AlertManager(runtime, clock=clock) for _ in range(3)]
    evaluators = [alerts, *others]
    for evaluator in evaluators:
        assert await evaluator.evaluate() == []
    clock.advance(61)
    raised = [a for evaluator in evaluators for a in await evaluator.evaluate()]
    assert len([a for a in raised if a["rule"] == "provider_success_rate"]) == 1
    assert len(await alerts.active()) == 2


async def test_thresholds_are_hot_reloaded(
    env: tuple[AlertManager, Clock, httpx.AsyncClient],
) -> None:
    alerts, clock, client = env
    await _generate(client, "slowish", 4)
    await alerts.evaluate()
    clock.advance(61)
    assert await alerts.evaluate() == []  # 30 ms is far under 10 s
    # nothing fails; a 10 ms threshold, set at run time, makes 30 ms "slow"
    changed = await client.put(
        "/admin/config", json={"routing": {"alerts": {"latency_above_s": 0.01}}}
    )
    assert changed.status_code == 200, changed.text
    await alerts.evaluate()
    clock.advance(61)
    raised = await alerts.evaluate()
    assert [a["rule"] for a in raised] == ["latency"]
    refused = await client.put("/admin/config", json={"routing": {"alerts": {"min_samples": 0}}})
    assert refused.status_code in (400, 422)
    assert "routing.alerts.min_samples" in refused.json()["error"]["message"]


async def test_admin_alerts_route(
    env: tuple[AlertManager, Clock, httpx.AsyncClient], make_account: Callable[..., Any]
) -> None:
    alerts, clock, client = env
    await _generate(client, "flaky", 4)
    await alerts.evaluate()
    clock.advance(61)
    await alerts.evaluate()
    body = (await client.get("/admin/alerts")).json()
    assert {a["rule"] for a in body["active"]} == {"provider_success_rate", "error_rate"}
    assert len(body["history"]) == 2
    assert body["rules"]["provider_success_rate_below"] == 0.5
    assert "webhook_url" not in body["rules"]
    _, plain = await make_account("plain")
    assert (await client.get("/admin/alerts", headers=plain)).status_code == 403


async def test_alert_e_mail(make_settings: Callable[..., Settings], smtp_inbox: Any) -> None:
    inbox, port = smtp_inbox
    settings = make_settings(
        providers={"flaky": {"kind": "placeholder", "fail_rate": 1.0}},
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        routing={
            "retry": {"attempts": 1},
            "alerts": {"min_samples": 2, "raise_after_s": 0, "email": ["ops@example.com"]},
        },
    )
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    clock = Clock()
    alerts = AlertManager(runtime, clock=clock)
    app = create_app(settings, runtime=runtime, run_worker=False)
    try:
        async with admin_client(app) as client:
            await _generate(client, "flaky", 2)
        raised = await alerts.evaluate()
        assert len(raised) == 2
        await alerts.close()
        subjects = sorted(str(m["Subject"]) for _, m in inbox.messages)
        assert len(subjects) == 2 and all(s.startswith("pixelgate ALERT") for s in subjects)
    finally:
        await runtime.close()
