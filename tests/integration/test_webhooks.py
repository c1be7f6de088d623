"""Webhooks: signed, retried with backoff, recorded; never sent to a non-public address."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from pixelgate.api.app import create_app
from pixelgate.config import Settings
from pixelgate.core.webhooks import SIGNATURE_HEADER, account_secret, sign, verify
from pixelgate.runtime import Runtime
from tests.conftest import admin_client
from tests.fakes import LoopbackServer, Received

WAIT = {"Prefer": "wait=10"}
PUBLIC = "93.184.216.34"


class Flaky:
    """Fails the first ``failures`` deliveries with 503, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, received: Received) -> tuple[int, dict[str, str], bytes]:
        self.calls += 1
        if self.calls <= self.failures:
            return 503, {}, b"try later"
        return 200, {}, b"ok"


@pytest.fixture
def receiver() -> Any:
    with LoopbackServer({"/hook": Flaky(2), "/ok": lambda r: (200, {}, b"ok")}) as server:
        yield server


async def _open(settings: Settings) -> tuple[Runtime, httpx.AsyncClient]:
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    app = create_app(settings, runtime=runtime, run_worker=False)
    client = admin_client(app)
    return runtime, client


def _settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "providers": {
            "fast": {"kind": "placeholder"},
            "slow": {"kind": "placeholder", "latency_ms": 3000},
            "flaky": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "invalid"},
        },
        "routing": {"default": ["fast"]},
        "webhook_backoff_s": 0.05,
        "webhook_backoff_max_s": 0.2,
    }
    base.update(overrides)
    return make_settings(**base)


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime, client = await _open(_settings(make_settings, webhook_allow_hosts=["127.0.0.1"]))
    try:
        yield runtime, client
    finally:
        await client.aclose()
        await runtime.close()


@pytest.fixture
async def strict_env(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """Only ``hooks.example`` is allow-listed; loopback and private addresses are not."""
    runtime, client = await _open(_settings(make_settings, webhook_allow_hosts=["hooks.example"]))
    try:
        yield runtime, client
    finally:
        await client.aclose()
        await runtime.close()


def _stub_dns(runtime: Runtime, table: dict[str, list[list[str]]]) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        answers = table[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    runtime.pipeline.fetcher.resolver = resolve


async def test_webhook_is_signed_retried_and_recorded(
    env: tuple[Runtime, httpx.AsyncClient], receiver: LoopbackServer
) -> None:
    runtime, client = env
    started = time.monotonic()
    r = await client.post(
        "/v1/generations",
        json={"prompt": "a kite", "width": 32, "height": 32, "webhook_url": receiver.url("/hook")},
        headers=WAIT,
    )
    assert r.status_code == 200 and r.json()["status"] == "SUCCEEDED"
    gen_id = r.json()["id"]
    await runtime.pipeline.drain_hooks()
    assert time.monotonic() - started < 10
    assert len(receiver.received) == 3  # failed twice (503), then accepted
    secret = (await client.get("/v1/webhooks/secret")).json()["secret"]
    assert secret == account_secret(runtime.settings, (await runtime.local_caller()).account_id)
    for hit in receiver.received:
        assert hit.method == "POST"
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["Pixelgate-Event"] == "generation.succeeded"
        assert hit.headers["Pixelgate-Delivery"].startswith("whd_")
        header = hit.headers[SIGNATURE_HEADER]
        assert verify(secret, header, hit.body)
        assert not verify(secret, header, hit.body + b" ")  # tampered body
        assert not verify("whsec_other", header, hit.body)  # another account's secret
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert not verify(secret, header, hit.body, now=timestamp + 3600)  # replayed late
    payload = json.loads(receiver.received[-1].body)
    assert payload["type"] == "generation.succeeded"
    assert payload["generation"]["id"] == gen_id
    assert payload["generation"]["status"] == "SUCCEEDED"
    assert payload["generation"]["images"][0]["sha256"]
    deliveries = (
        await client.get("/v1/webhooks/deliveries", params={"generation_id": gen_id})
    ).json()
    [delivery] = deliveries["data"]
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 3 and delivery["response_status"] == 200
    assert delivery["event"] == "generation.succeeded"


async def test_failed_and_canceled_generations_are_delivered_to_the_account_url(
    env: tuple[Runtime, httpx.AsyncClient], receiver: LoopbackServer
) -> None:
    runtime, client = env
    r = await client.put("/v1/webhooks", json={"url": receiver.url("/ok")})
    assert r.status_code == 200 and r.json()["url"] == receiver.url("/ok")
    failed = await client.post(
        "/v1/generations", json={"prompt": "nope", "provider": "flaky"}, headers=WAIT
    )
    assert failed.json()["status"] == "FAILED"
    slow = await client.post("/v1/generations", json={"prompt": "slow", "provider": "slow"})
    canceled = await client.delete(f"/v1/generations/{slow.json()['id']}")
    assert canceled.json()["status"] in ("CANCELED", "PROCESSING", "PENDING")
    view = await runtime.pipeline.wait(slow.json()["id"], 10)
    assert view.status == "CANCELED"
    await runtime.pipeline.drain_hooks()
    events = {
        json.loads(hit.body)["generation"]["id"]: hit.headers["Pixelgate-Event"]
        for hit in receiver.received
    }
    assert events == {
        failed.json()["id"]: "generation.failed",
        slow.json()["id"]: "generation.canceled",
    }
    failure = next(json.loads(h.body) for h in receiver.received if "failed" in h.body.decode())
    assert failure["generation"]["error"]["code"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://localhost.internal.test/hook",  # resolves to a private address (stub)
    ],
)
async def test_webhooks_to_private_addresses_are_refused_at_admission(
    strict_env: tuple[Runtime, httpx.AsyncClient], url: str
) -> None:
    runtime, client = strict_env
    _stub_dns(runtime, {"localhost.internal.test": [["192.168.1.10"]]})
    r = await client.post("/v1/generations", json={"prompt": "x", "webhook_url": url})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("unsafe_url", "webhook_url")
    assert await runtime.store.list_generations(account_id=None) == []
    r = await client.put("/v1/webhooks", json={"url": url})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unsafe_url"


async def test_a_redirect_to_a_private_address_is_not_followed(
    strict_env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = strict_env
    with LoopbackServer() as target, LoopbackServer() as hooks:
        hooks.routes["/hook"] = lambda r: (307, {"Location": target.url("/steal")}, b"")
        _stub_dns(runtime, {"hooks.example": [["127.0.0.1"]]})
        r = await client.post(
            "/v1/generations",
            json={"prompt": "x", "webhook_url": hooks.url("/hook", host="hooks.example")},
            headers=WAIT,
        )
        assert r.json()["status"] == "SUCCEEDED"
        await runtime.pipeline.drain_hooks()
        assert len(hooks.received) == 1
        assert hooks.received[0].headers["Host"] == f"hooks.example:{hooks.port}"
        assert target.received == []
    [delivery] = (await client.get("/v1/webhooks/deliveries")).json()["data"]
    assert delivery["status"] == "failed" and delivery["attempts"] == 1
    assert delivery["response_status"] == 307
    assert "redirects are not followed" in delivery["error"]


async def test_dns_rebinding_after_admission_is_refused_at_delivery(
    strict_env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = strict_env
    # public when admitted, private when delivered
    _stub_dns(runtime, {"rebind.example": [[PUBLIC], ["10.0.0.7"]]})
    r = await client.post(
        "/v1/generations",
        json={"prompt": "x", "webhook_url": "http://rebind.example/hook"},
        headers=WAIT,
    )
    assert r.status_code == 200, r.text
    await runtime.pipeline.drain_hooks()
    [delivery] = (await client.get("/v1/webhooks/deliveries")).json()["data"]
    assert delivery["status"] == "failed" and delivery["attempts"] == 1
    assert "non-public" in delivery["error"]


async def test_an_account_url_to_a_private_address_is_refused_at_delivery(
    strict_env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = strict_env
    caller = await runtime.local_caller()
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/", "http://127.0.0.1:9/"):
        await runtime.store.update_account(caller.account_id, webhook_url=url)
        r = await client.post("/v1/generations", json={"prompt": url}, headers=WAIT)
        assert r.json()["status"] == "SUCCEEDED"
        await runtime.pipeline.drain_hooks()
    deliveries = (await client.get("/v1/webhooks/deliveries")).json()["data"]
    assert len(deliveries) == 3
    assert all(d["status"] == "failed" and d["attempts"] == 1 for d in deliveries)
    assert all(d["response_status"] is None for d in deliveries)


async def test_retries_are_bounded(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = env
    with LoopbackServer({"/down": lambda r: (500, {}, b"down")}) as down:
        r = await client.post(
            "/v1/generations",
            json={"prompt": "x", "webhook_url": down.url("/down")},
            headers=WAIT,
        )
        assert r.json()["status"] == "SUCCEEDED"
        await runtime.pipeline.drain_hooks()
        assert len(down.received) == runtime.settings.webhook_max_attempts
    [delivery] = (await client.get("/v1/webhooks/deliveries")).json()["data"]
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == runtime.settings.webhook_max_attempts
    assert delivery["response_status"] == 500


async def test_the_deployment_secret_is_generated_once_and_private(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = env
    first = (await client.get("/v1/webhooks/secret")).json()["secret"]
    path = runtime.settings.data_dir / "webhook_secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.startswith("whsec_") and path.read_text().strip() not in first
    assert (await client.get("/v1/webhooks/secret")).json()["secret"] == first


def test_a_configured_secret_signs_and_differs_per_account(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(webhook_secret="s3cret")
    a, b = account_secret(settings, "acct_a"), account_secret(settings, "acct_b")
    assert a != b and a == account_secret(settings, "acct_a")
    header = sign(a, 1_700_000_000, b'{"x":1}')
    assert verify(a, header, b'{"x":1}', now=1_700_000_100)
    assert not verify(b, header, b'{"x":1}', now=1_700_000_100)
    assert not (settings.data_dir / "webhook_secret").exists()


def test_migration_0002_adds_and_removes_the_deliveries_table(tmp_path: Any) -> None:
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from pixelgate.db.migrate import _alembic_config, run_migrations_sync

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"

    def tables() -> set[str]:
        engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    run_migrations_sync(url, "0002")
    assert "webhook_deliveries" in tables()
    command.downgrade(_alembic_config(url), "0001")
    assert "webhook_deliveries" not in tables() and "generations" in tables()
    run_migrations_sync(url)
    assert "webhook_deliveries" in tables()
