"""Partial images and simulated progress on a generation's event stream.

The OpenAI adapter runs against :class:`~tests.fakes.FakeOpenAIImages` on loopback
(the SSE wire protocol); the simulated curve against placeholders that report no
progress of their own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pixelgate.config import Settings
from pixelgate.db.store import RunningEvent
from pixelgate.providers._http import server_sent_events
from pixelgate.runtime import Runtime
from tests.fakes import LoopbackServer
from tests.providers.fakes.openai import FakeOpenAIImages

INTERVAL_S = 0.05


@pytest.fixture
def openai_api() -> Iterator[tuple[FakeOpenAIImages, LoopbackServer]]:
    fake = FakeOpenAIImages()
    with LoopbackServer({"/v1/images/generations": fake.route}) as server:
        yield fake, server


@pytest.fixture
def settings(
    make_settings: Any, openai_api: tuple[FakeOpenAIImages, LoopbackServer]
) -> Settings:
    _, server = openai_api
    return make_settings(
        providers={
            "openai": {"kind": "openai", "api_key": "sk-test-0123", "base_url": server.url("/v1")},
            "quiet": {"kind": "placeholder", "latency_ms": 600, "report_progress": False},
            "chatty": {"kind": "placeholder", "latency_ms": 600},
        },
        routing={"default": ["openai"]},
        simulated_progress_interval_s=INTERVAL_S,
        simulated_progress_expected_s=0.5,
    )


async def _events(client: httpx.AsyncClient, gen_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The generation's SSE stream, read to its end (the final event)."""
    async with client.stream("GET", f"/v1/generations/{gen_id}/events", timeout=20) as r:
        assert r.status_code == 200
        return [
            (event.event or "", json.loads(event.data))
            async for event in server_sent_events(r.aiter_lines())
        ]


async def _generate(client: httpx.AsyncClient, **fields: Any) -> str:
    r = await client.post("/v1/generations", json={"prompt": "a red fox", **fields})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def test_partial_images_are_events_before_succeeded(
    client: httpx.AsyncClient, openai_api: tuple[FakeOpenAIImages, LoopbackServer]
) -> None:
    fake, _ = openai_api
    gen_id = await _generate(client, provider="openai", model="gpt-image-1", partial_images=2)
    events = await _events(client, gen_id)
    types = [t for t, _ in events]
    assert types[-1] == "succeeded"
    partials = [data for t, data in events if t == "partial_image"]
    assert [p["index"] for p in partials] == [0, 1]
    assert types.index("partial_image") > types.index("provider_selected")
    assert fake.requests[-1]["stream"] is True and fake.requests[-1]["partial_images"] == 2
    for partial, sent in zip(partials, fake.partials, strict=False):
        assert partial["provider"] == "openai" and partial["format"] == "png"
        assert partial["bytes"] == len(sent) and "/partials/" in partial["key"]
        served = await client.get(partial["url"])
        assert served.status_code == 200 and served.content == sent
        assert served.headers["content-type"] == "image/png"


async def test_partial_images_change_neither_images_nor_charge(
    client: httpx.AsyncClient, runtime: Runtime, make_account: Any
) -> None:
    _, headers = await make_account("previews", credits=100)
    bodies = []
    for partial_images in (2, None):
        fields = {"provider": "openai", "model": "gpt-image-1", "partial_images": partial_images}
        r = await client.post(
            "/v1/generations",
            json={"prompt": "a red fox", **{k: v for k, v in fields.items() if v is not None}},
            headers={**headers, "Prefer": "wait=10"},
        )
        assert r.status_code == 200, r.text
        bodies.append(r.json())
    streamed, plain = bodies
    assert streamed["status"] == plain["status"] == "SUCCEEDED"
    assert streamed["cost"]["credits"] == plain["cost"]["credits"]
    assert streamed["cost"]["usd"] == plain["cost"]["usd"]
    assert [i["sha256"] for i in streamed["images"]] == [i["sha256"] for i in plain["images"]]
    assert len(streamed["images"]) == 1
    assert all("/partials/" not in i["url"] for i in streamed["images"])
    account = (await client.get("/v1/account", headers=headers)).json()
    assert account["credits"] == 100 - 2 * plain["cost"]["credits"]


async def test_simulated_progress_rises_below_100_and_stops_at_the_end(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    gen_id = await _generate(client, provider="quiet", width=64, height=64)
    events = await _events(client, gen_id)
    assert events[-1][0] == "succeeded"
    progress = [data for t, data in events if t == "progress"]
    assert len(progress) >= 3
    assert all(p["simulated"] is True for p in progress)
    values = [p["progress"] for p in progress]
    assert values == sorted(set(values)) and values[-1] < 100
    await asyncio.sleep(INTERVAL_S * 3)
    stored = await runtime.store.events_after(gen_id)
    assert stored[-1].type == "succeeded"
    assert (await client.get(f"/v1/generations/{gen_id}")).json()["progress"] == 100


async def test_real_progress_ends_the_simulation(client: httpx.AsyncClient) -> None:
    gen_id = await _generate(client, provider="chatty", width=64, height=64)
    progress = [data for t, data in await _events(client, gen_id) if t == "progress"]
    real = [i for i, p in enumerate(progress) if not p.get("simulated")]
    assert real, progress
    assert all(not p.get("simulated") for p in progress[real[0] :])
    assert any(p.get("simulated") for p in progress[: real[0]])


async def test_no_progress_or_preview_is_written_after_the_end(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    gen_id = await _generate(client, provider="openai", model="gpt-image-1", partial_images=1)
    await _events(client, gen_id)
    before = await runtime.store.events_after(gen_id)
    late = [
        RunningEvent(gen_id, "progress", {"progress": 50, "simulated": True}, {"progress": 50}),
        RunningEvent(gen_id, "partial_image", {"index": 0, "key": "ai/partials/x.png"}),
    ]
    assert await runtime.store.add_running_events(late) == []
    assert await runtime.store.events_after(gen_id) == before
    assert (await client.get(f"/v1/generations/{gen_id}")).json()["progress"] == 100
