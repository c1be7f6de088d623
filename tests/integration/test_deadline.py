"""The routing deadline bounds a job's provider call, and its wait for an outbound slot:
either way the job fails with ``deadline_exceeded`` and says which."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from pixelgate.api.app import create_app
from pixelgate.config import Settings
from pixelgate.runtime import Runtime
from tests.conftest import ADMIN_KEY


@pytest.fixture
async def slow_client(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        providers={"slow": {"kind": "placeholder", "latency_ms": 3000}},
        routing={
            "default": ["slow"],
            "deadline_s": 0.5,
            "retry": {"attempts": 1},
            "outbound": {"slow": {"concurrency": 1}},
        },
    )
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    app = create_app(settings, runtime=runtime, run_worker=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as client:
            yield client
    finally:
        await runtime.close()


async def _error(client: httpx.AsyncClient, prompt: str) -> dict[str, Any]:
    r = await client.post("/v1/generations", json={"prompt": prompt}, headers={"Prefer": "wait=10"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "FAILED", body
    return dict(body["error"])


async def test_the_deadline_ends_a_call_and_a_wait_for_an_outbound_slot(
    slow_client: httpx.AsyncClient,
) -> None:
    called, waited = await asyncio.gather(
        _error(slow_client, "first"), _error(slow_client, "second")
    )
    errors = sorted([called, waited], key=lambda e: "slot" in e["message"])
    assert [e["code"] for e in errors] == ["deadline_exceeded", "deadline_exceeded"]
    assert "no result before the deadline" in errors[0]["message"]
    assert "the deadline passed while waiting for an outbound slot" in errors[1]["message"]
