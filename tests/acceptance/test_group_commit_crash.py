"""SIGKILL the server while group commits are in flight: every acknowledged job still
ends, and every charge belongs to a job that ends (none is lost half-written).

Many admissions are sent at once, so they share commits; the kill lands while some of
them are being written, some answered and some not yet.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import httpx

from tests.acceptance.conftest import ServerFactory, wait_all_terminal

CONFIG = """
[providers.ok]
kind = "placeholder"
latency_ms = 300

[routing]
default = ["ok"]
"""
CLIENTS = 64
CREDITS = 10_000


async def _flood(base_url: str, headers: dict[str, str], acked: list[str], stop: float) -> None:
    async def one(client: httpx.AsyncClient, i: int) -> None:
        while time.monotonic() < stop:
            try:
                r = await client.post(
                    "/v1/generations",
                    json={"prompt": f"flood {i}", "width": 32, "height": 32},
                )
            except httpx.HTTPError:
                return  # the server died under this request: not acknowledged
            assert r.status_code == 202, r.text
            acked.append(r.json()["id"])

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=10, limits=limits
    ) as client:
        await asyncio.gather(*(one(client, i) for i in range(CLIENTS)))


def test_sigkill_during_group_commits_loses_no_acknowledged_job(
    start_server: ServerFactory,
) -> None:
    env = {"PIXELGATE_LEASE_SECONDS": "2", "PIXELGATE_SHUTDOWN_GRACE_S": "2"}
    server = start_server(config=CONFIG, env=env)
    admin = server.client()
    created = admin.post(
        "/admin/accounts", json={"name": "payer", "tier": "ENTERPRISE", "credits": CREDITS}
    )
    assert created.status_code == 201, created.text
    key = admin.post("/admin/accounts/payer/keys", json={}).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}

    acked: list[str] = []

    async def flood_then_kill() -> None:
        stop = time.monotonic() + 30
        flood = asyncio.create_task(_flood(server.base_url, headers, acked, stop))
        # kill once admissions are flowing and sharing commits
        await asyncio.wait_for(_until(lambda: len(acked) >= 100), timeout=30)
        server.proc.send_signal(signal.SIGKILL)
        await flood

    asyncio.run(flood_then_kill())
    assert server.proc.wait(timeout=10) == -signal.SIGKILL
    server.close_clients()
    server = start_server(config=CONFIG, env=env, data_dir=server.data_dir, port=server.port)

    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as api:
        bodies = wait_all_terminal(api, acked, timeout=90, server=server)
        assert {b["status"] for b in bodies.values()} == {"SUCCEEDED"}
        ledger = api.get("/v1/account/ledger", params={"limit": 1000}).json()
        account = api.get("/v1/account").json()
        listed = _all_generations(api)

    entries = ledger["entries"]
    assert account["credits"] == ledger["balance"] == sum(e["credits"] for e in entries)
    debits = Counter(e["generation_id"] for e in entries if e["kind"] == "debit")
    # one debit per generation that exists, none for a generation that does not
    assert set(debits) == set(listed), set(debits) ^ set(listed)
    assert all(n == 1 for n in debits.values())
    assert set(acked) <= set(listed)
    # what was written but not answered (the kill) also ends: nothing is half-admitted
    late = [gen_id for gen_id, status in listed.items() if status not in _TERMINAL]
    if late:
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as api:
            wait_all_terminal(api, late, timeout=60, server=server)


async def _until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 - polls a list other tasks fill
        await asyncio.sleep(0.01)


_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})


def _all_generations(api: httpx.Client) -> dict[str, str]:
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/generations", params=params).json()
        found.update({g["id"]: g["status"] for g in page["data"]})
        if not page["has_more"]:
            return found
        cursor = page["next_cursor"]
