"""What a job costs the embedded worker beside its run: one task, no watcher beside it,
and no finish-hook task when no hook has anything to do."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from pixelgate.core.finishing import Finisher
from tests.conftest import wait_status


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
        await wait_status(client, gen_id, "PROCESSING")
    assert len(asyncio.all_tasks()) - before <= 20 + 5
    r = await client.delete(f"/v1/generations/{ids[7]}")
    assert r.status_code in (200, 202)
    assert (await wait_status(client, ids[7], "CANCELED"))["images"] == []
    for gen_id in ids[:7] + ids[8:]:
        assert (await wait_status(client, gen_id, "SUCCEEDED"))["status"] == "SUCCEEDED"


async def test_a_job_with_no_webhook_mail_or_followers_starts_no_hook_task(
    sqlite_only: None, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finish hooks that can tell at once they have nothing to do (no webhook URL on
    the request or the cached account, no mail server or no failure, no seed) start no
    task; a seeded job's may have followers to announce."""
    started: list[list[str]] = []
    run_hooks = Finisher._run_hooks

    async def recording(self: Finisher, finished: Any, hooks: list[Any]) -> None:
        started.append([type(hook).__name__ for hook in hooks])
        await run_hooks(self, finished, hooks)

    monkeypatch.setattr(Finisher, "_run_hooks", recording)
    for body in ({"prompt": "plain"}, {"prompt": "seeded", "seed": 5}):
        r = await client.post(
            "/v1/generations",
            json={**body, "width": 64, "height": 64},
            headers={"Prefer": "wait=10"},
        )
        assert r.status_code == 200 and r.json()["status"] == "SUCCEEDED", r.text
    assert started == [["_FollowersHook"]]
