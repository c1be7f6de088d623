"""Tenant isolation of the per-account reports: usage, the ledger, webhook deliveries.

Two ordinary accounts work side by side; each sees only its own rows, and naming the
other's generation finds nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from pixelgate.api.app import create_app
from pixelgate.config import Settings
from pixelgate.runtime import Runtime
from tests.fakes import LoopbackServer

WAIT = {"Prefer": "wait=10"}


@pytest.fixture
async def two_tenants(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Runtime, Callable[[str], httpx.AsyncClient], str]]:
    settings = make_settings(
        providers={"fast": {"kind": "placeholder", "price_usd": "0.02"}},
        routing={"default": ["fast"]},
        webhook_allow_hosts=["127.0.0.1"],
    )
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    app = create_app(settings, runtime=runtime, run_worker=False)
    keys: dict[str, str] = {}
    for name, credits in (("alpha", 50), ("beta", 70)):
        account = await runtime.store.create_account(name, tier="PRO", credits=credits)
        _, keys[name] = await runtime.store.create_key(account.id)
    clients: list[httpx.AsyncClient] = []

    def client_of(name: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {keys[name]}"},
        )
        clients.append(client)
        return client

    with LoopbackServer({"/hook": lambda r: (200, {}, b"ok")}) as receiver:
        try:
            yield runtime, client_of, receiver.url("/hook")
        finally:
            for client in clients:
                await client.aclose()
            await runtime.close()


async def _generate(client: httpx.AsyncClient, hook: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = await client.post(
            "/v1/generations",
            json={"prompt": f"p{i}", "width": 32, "height": 32, "webhook_url": hook},
            headers=WAIT,
        )
        assert r.status_code == 200 and r.json()["status"] == "SUCCEEDED", r.text
        ids.append(r.json()["id"])
    return ids


async def _deliveries(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    for _ in range(100):  # deliveries are recorded after the job ends
        r = await client.get("/v1/webhooks/deliveries", params=params)
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["data"]
        if rows and all(row["status"] == "delivered" for row in rows):
            return rows
        await asyncio.sleep(0.05)
    return rows


async def test_each_account_sees_only_its_own_usage_ledger_and_deliveries(
    two_tenants: tuple[Runtime, Callable[[str], httpx.AsyncClient], str],
) -> None:
    _, client_of, hook = two_tenants
    alpha, beta = client_of("alpha"), client_of("beta")
    alpha_ids = await _generate(alpha, hook, 2)
    beta_ids = await _generate(beta, hook, 3)

    usage_a = (await alpha.get("/v1/usage", params={"days": 7})).json()["data"]
    usage_b = (await beta.get("/v1/usage", params={"days": 7})).json()["data"]
    assert [(r["succeeded"], r["usd"]) for r in usage_a] == [(2, "0.04")]
    assert [(r["succeeded"], r["usd"]) for r in usage_b] == [(3, "0.06")]

    ledger_a = (await alpha.get("/v1/account/ledger")).json()
    ledger_b = (await beta.get("/v1/account/ledger")).json()
    assert {e["generation_id"] for e in ledger_a["entries"] if e["generation_id"]} == set(
        alpha_ids
    )
    assert {e["generation_id"] for e in ledger_b["entries"] if e["generation_id"]} == set(
        beta_ids
    )
    assert ledger_a["balance"] == 50 - sum(
        -e["credits"] for e in ledger_a["entries"] if e["kind"] == "debit"
    )

    seen_a = await _deliveries(alpha)
    seen_b = await _deliveries(beta)
    assert {d["generation_id"] for d in seen_a} == set(alpha_ids)
    assert {d["generation_id"] for d in seen_b} == set(beta_ids)
    # naming the other account's generation finds nothing
    assert await _deliveries(alpha, generation_id=beta_ids[0]) == []
    assert (await alpha.get(f"/v1/generations/{beta_ids[0]}")).status_code == 404
