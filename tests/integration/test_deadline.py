"""The routing deadline bounds a job's provider call, and its wait for an outbound slot:
either way the job fails with ``deadline_exceeded`` and says which."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from pixelgate.config import Settings


def _settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        providers={"slow": {"kind": "placeholder", "latency_ms": 3000}},
        routing={
            "default": ["slow"],
            "deadline_s": 0.5,
            "retry": {"attempts": 1},
            "outbound": {"slow": {"concurrency": 1}},
        },
    )


async def _error(client: httpx.AsyncClient, prompt: str) -> dict[str, Any]:
    r = await client.post("/v1/generations", json={"prompt": prompt}, headers={"Prefer": "wait=10"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "FAILED", body
    return dict(body["error"])


async def test_the_deadline_ends_a_wait_for_an_outbound_slot_and_a_call(
    gateway: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    async with gateway(_settings(make_settings)) as (runtime, client):
        gates = runtime.pipeline.control.outbound.gates
        assert await gates.try_acquire("p:slow", 1)  # the provider's one slot, held elsewhere
        try:
            waited = await _error(client, "waits")
        finally:
            await gates.release("p:slow")
        called = await _error(client, "calls")
    assert [waited["code"], called["code"]] == ["deadline_exceeded", "deadline_exceeded"]
    assert "the deadline passed while waiting for an outbound slot" in waited["message"]
    assert "no result before the deadline" in called["message"]
