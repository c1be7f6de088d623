"""WebSocket status: tickets, a generation's stream, resume, and the account-wide stream.

The app runs under uvicorn on a loopback port in the test's own event loop (sharing the
test runtime); the ``websockets`` package is the client, as a browser's socket would be.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from pixelgate.runtime import Runtime

WAIT = {"Prefer": "wait=10"}
RECV_TIMEOUT_S = 10.0


@pytest.fixture
async def ws_base(app: Any) -> AsyncIterator[str]:
    """``ws://127.0.0.1:PORT`` of the test app served by uvicorn on an ephemeral port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _ticket(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    r = await client.post("/v1/events/tickets", headers=headers or {})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["expires_in"] == 30
    assert body["ticket"].startswith("wst_")
    return str(body["ticket"])


async def _generate(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"prompt": "a lighthouse", "width": 64, "height": 64, **extra}
    r = await client.post("/v1/generations", json=body, headers={**WAIT, **(headers or {})})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _read_all(url: str) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Every message until the server closes; then the close code and reason."""
    messages: list[dict[str, Any]] = []
    async with connect(url, open_timeout=RECV_TIMEOUT_S) as ws:
        try:
            while True:
                raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)
                messages.append(json.loads(raw))
        except ConnectionClosed:
            pass
        return messages, ws.close_code, ws.close_reason


async def test_ticket_needs_an_api_key(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/events/tickets", headers={"Authorization": ""})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


async def test_generation_socket_streams_every_event_then_closes_normally(
    client: httpx.AsyncClient, ws_base: str
) -> None:
    gen = await _generate(client)
    ticket = await _ticket(client)
    messages, code, reason = await _read_all(
        f"{ws_base}/v1/generations/{gen['id']}/ws?ticket={ticket}"
    )
    assert (code, reason) == (1000, "generation succeeded")
    types = [m["type"] for m in messages]
    assert types[0] == "queued" and types[-1] == "succeeded", types
    assert all(m["generation_id"] == gen["id"] for m in messages)
    ids = [m["id"] for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # the same events as the SSE stream carries
    sse = await client.get(f"/v1/generations/{gen['id']}/events")
    sse_ids = [int(line[4:]) for line in sse.text.splitlines() if line.startswith("id: ")]
    assert sse_ids == ids


async def test_generation_socket_follows_a_running_job_live(
    client: httpx.AsyncClient, ws_base: str
) -> None:
    r = await client.post(
        "/v1/generations", json={"prompt": "slow", "provider": "slow", "width": 64, "height": 64}
    )
    gen_id = r.json()["id"]
    ticket = await _ticket(client)
    messages, code, reason = await _read_all(
        f"{ws_base}/v1/generations/{gen_id}/ws?ticket={ticket}"
    )
    assert (code, reason) == (1000, "generation succeeded")
    assert messages[-1]["type"] == "succeeded"
    status = (await client.get(f"/v1/generations/{gen_id}")).json()["status"]
    assert status == "SUCCEEDED"


async def test_generation_socket_resumes_after_an_event_id(
    client: httpx.AsyncClient, ws_base: str
) -> None:
    gen = await _generate(client)
    url = f"{ws_base}/v1/generations/{gen['id']}/ws"
    everything, _, _ = await _read_all(f"{url}?ticket={await _ticket(client)}")
    assert len(everything) >= 3
    middle = everything[1]["id"]
    rest, code, _ = await _read_all(f"{url}?ticket={await _ticket(client)}&last_event_id={middle}")
    assert code == 1000
    assert rest == everything[2:]


async def test_a_ticket_used_twice_is_refused(client: httpx.AsyncClient, ws_base: str) -> None:
    gen = await _generate(client)
    url = f"{ws_base}/v1/generations/{gen['id']}/ws?ticket={await _ticket(client)}"
    first, code, _ = await _read_all(url)
    assert code == 1000 and first
    again, code, reason = await _read_all(url)
    assert again == []
    assert (code, reason) == (4401, "ticket: unknown, expired or already used")


async def test_an_expired_ticket_is_refused(
    client: httpx.AsyncClient, ws_base: str, runtime: Runtime
) -> None:
    gen = await _generate(client)
    runtime.tickets.ttl_s = 0.1
    r = await client.post("/v1/events/tickets")
    assert r.json()["expires_in"] == 0.1
    await asyncio.sleep(0.3)
    messages, code, reason = await _read_all(
        f"{ws_base}/v1/generations/{gen['id']}/ws?ticket={r.json()['ticket']}"
    )
    assert messages == []
    assert (code, reason) == (4401, "ticket: unknown, expired or already used")


@pytest.mark.parametrize("query", ["", "?ticket=", "?ticket=wst_made_up"])
async def test_a_socket_without_a_valid_ticket_is_closed_with_a_reason(
    client: httpx.AsyncClient, ws_base: str, query: str
) -> None:
    gen = await _generate(client)
    messages, code, reason = await _read_all(f"{ws_base}/v1/generations/{gen['id']}/ws{query}")
    assert messages == []
    assert code == 4401
    assert reason is not None and reason.startswith("ticket: ")


async def test_a_bad_last_event_id_is_refused_naming_it(
    client: httpx.AsyncClient, ws_base: str
) -> None:
    gen = await _generate(client)
    ticket = await _ticket(client)
    _, code, reason = await _read_all(
        f"{ws_base}/v1/generations/{gen['id']}/ws?ticket={ticket}&last_event_id=-1"
    )
    assert code == 4400
    assert reason is not None and reason.startswith("last_event_id: ")


async def test_another_accounts_generation_is_refused(
    client: httpx.AsyncClient, ws_base: str, make_account: Callable[..., Any]
) -> None:
    gen = await _generate(client)  # the admin account's
    _, other = await make_account("other")
    ticket = await _ticket(client, other)
    messages, code, reason = await _read_all(
        f"{ws_base}/v1/generations/{gen['id']}/ws?ticket={ticket}"
    )
    assert messages == []
    assert code == 4404
    assert reason == f"generation {gen['id']!r} not found"


async def test_account_socket_shows_only_the_accounts_events(
    client: httpx.AsyncClient, ws_base: str, make_account: Callable[..., Any]
) -> None:
    _, alice = await make_account("alice")
    _, bob = await make_account("bob")
    ticket = await _ticket(client, alice)
    async with connect(f"{ws_base}/v1/events/ws?ticket={ticket}") as ws:
        await asyncio.sleep(0.2)  # the stream starts from "now": let it read where that is
        bobs = await _generate(client, bob)
        alices = await _generate(client, alice)
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "succeeded":
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)))
    assert {m["generation_id"] for m in seen} == {alices["id"]}, (bobs["id"], seen)
    assert seen[0]["type"] == "queued"


async def test_account_socket_resumes_after_an_event_id(
    client: httpx.AsyncClient, ws_base: str, make_account: Callable[..., Any]
) -> None:
    _, alice = await make_account("alice")
    first = await _generate(client, alice)
    second = await _generate(client, alice)
    sse = await client.get(f"/v1/generations/{first['id']}/events", headers=alice)
    last_of_first = max(int(line[4:]) for line in sse.text.splitlines() if line.startswith("id: "))
    ticket = await _ticket(client, alice)
    async with connect(
        f"{ws_base}/v1/events/ws?ticket={ticket}&last_event_id={last_of_first}"
    ) as ws:
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "succeeded":
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)))
    assert {m["generation_id"] for m in seen} == {second["id"]}
    assert all(m["id"] > last_of_first for m in seen)
