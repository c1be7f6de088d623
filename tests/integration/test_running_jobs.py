"""What a running job costs the embedded worker: one task, no watcher beside it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


async def _wait_status(client: httpx.AsyncClient, gen_id: str, status: str) -> dict[str, Any]:
    for _ in range(200):
        body = (await client.get(f"/v1/generations/{gen_id}")).json()
        if body["status"] == status:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{gen_id} never reached {status}: {body}")


async def test_running_jobs_take_one_task_each_and_any_of_them_can_be_canceled(
    sqlite_only: None, client: httpx.AsyncClient
) -> None:
    """A cancel reaches a running job through a callback the bus calls: no task (or
    event) waits for it beside each job, so thousands of waiting jobs cost one task each."""
    before = len(asyncio.all_tasks())
    ids = []
    for i in range(20):
        r = await client.post("/v1/generations", json={"prompt": f"long {i}", "provider": "slow"})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    for gen_id in ids:
        await _wait_status(client, gen_id, "PROCESSING")
    assert len(asyncio.all_tasks()) - before <= 20 + 5
    r = await client.delete(f"/v1/generations/{ids[7]}")
    assert r.status_code in (200, 202)
    assert (await _wait_status(client, ids[7], "CANCELED"))["images"] == []
    for gen_id in ids[:7] + ids[8:]:
        assert (await _wait_status(client, gen_id, "SUCCEEDED"))["status"] == "SUCCEEDED"
