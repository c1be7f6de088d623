"""ComfyUI adapter against a fake ComfyUI server (HTTP via MockTransport, /ws on localhost)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from pixelgate.errors import InvalidRequest, ProviderTimeout, Transient
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.comfyui import DEFAULT_WORKFLOW, ComfyUIProvider, ComfyUISettings
from tests.fakes import FakeJobContext
from tests.providers.kit import PNG, FakeServer, hang, json_body, reply

BASE = "http://comfy.local:8188"
PROMPT_ID = "6f962d0e-40d9-45e8-b378-7247258cadde"
IMAGES = [{"filename": "pixelgate_00001_.png", "subfolder": "", "type": "output"}]


def history(
    outputs: dict[str, Any] | None = None, messages: list[Any] | None = None, ok: bool = True
) -> dict[str, Any]:
    return {
        PROMPT_ID: {
            "prompt": [1, PROMPT_ID, {}, {}, ["9"]],
            "outputs": outputs if outputs is not None else {"9": {"images": IMAGES}},
            "status": {
                "status_str": "success" if ok else "error",
                "completed": ok,
                "messages": messages or [["execution_start", {"prompt_id": PROMPT_ID}]],
            },
        }
    }


def queue(running: tuple[str, ...] = (), pending: tuple[str, ...] = ()) -> dict[str, Any]:
    def item(number: int, prompt_id: str) -> list[Any]:
        return [number, prompt_id, {}, {"client_id": "c"}, ["9"]]

    return {
        "queue_running": [item(i, p) for i, p in enumerate(running)],
        "queue_pending": [item(10 + i, p) for i, p in enumerate(pending)],
    }


def make(server: FakeServer, base_url: str = BASE, **settings: Any) -> ComfyUIProvider:
    options: dict[str, Any] = {"base_url": base_url, "poll_interval_s": 0.01, "websocket": False}
    options.update(settings)
    return ComfyUIProvider("comfy", ComfyUISettings(**options), server.client())


class FakeComfy:
    """A scripted ComfyUI: ``queue_states`` are what GET /queue answers, in turn."""

    def __init__(self, queue_states: list[dict[str, Any]], final: dict[str, Any]) -> None:
        self.queue_states = iter(queue_states)
        self.final = final
        self.finished = asyncio.Event()
        self.submitted = asyncio.Event()
        self.graph: dict[str, Any] = {}
        self.client_id = ""
        self.ctx: FakeJobContext | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/prompt":
            data = json_body(request)
            assert set(data) == {"prompt", "client_id"}
            self.graph, self.client_id = data["prompt"], data["client_id"]
            self.submitted.set()
            return reply(200, {"prompt_id": PROMPT_ID, "number": 3, "node_errors": {}})
        if path == f"/history/{PROMPT_ID}":
            assert self.ctx is None or self.ctx.provider_job_id == PROMPT_ID
            if self.finished.is_set():
                return reply(200, self.final)
            return reply(200, {})
        if path == "/queue":
            state = next(self.queue_states, None)
            if state is None:
                self.finished.set()
                return reply(200, queue())
            return reply(200, state)
        if path == "/view":
            params = request.url.params
            assert params["filename"] == "pixelgate_00001_.png"
            assert params["type"] == "output" and params["subfolder"] == ""
            return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        return httpx.Response(404)


async def test_default_workflow_injected_queued_then_run_by_polling() -> None:
    fake = FakeComfy(
        [queue(running=("other",), pending=("x", PROMPT_ID)), queue(pending=(PROMPT_ID,)),
         queue(running=(PROMPT_ID,))],
        history(),
    )  # fmt: skip
    server = FakeServer(fake)
    ctx = server.context()
    fake.ctx = ctx
    req = ProviderRequest(
        "a castle", negative_prompt="people", n=2, width=770, height=512, seed=123,
        options={"steps": 8, "cfg": 4.5, "unknown_knob": 1},
    )  # fmt: skip
    res = await make(server).generate(req, ctx)
    graph = fake.graph
    assert graph["6"]["inputs"]["text"] == "a castle"
    assert graph["7"]["inputs"]["text"] == "people"
    assert graph["3"]["inputs"]["seed"] == 123
    assert graph["3"]["inputs"]["steps"] == 8 and graph["3"]["inputs"]["cfg"] == 4.5
    assert graph["5"]["inputs"] == {"width": 768, "height": 512, "batch_size": 2}
    assert graph["3"]["inputs"]["model"] == ["4", 0]  # links untouched
    assert DEFAULT_WORKFLOW["6"]["inputs"]["text"] == ""  # the template is not mutated
    assert [img.data for img in res.images] == [PNG]
    assert res.images[0].content_type == "image/png" and res.images[0].seed == 123
    assert ctx.saved_jobs == [PROMPT_ID]
    assert ctx.progress_reports == [
        (8, "queue position 2"),
        (9, "queue position 1"),
        (50, "running"),
    ]
    assert res.cost_usd == Decimal("0")


async def test_random_seed_when_none_is_given() -> None:
    fake = FakeComfy([], history())
    server = FakeServer(fake)
    res = await make(server).generate(ProviderRequest("x"), server.context())
    seed = fake.graph["3"]["inputs"]["seed"]
    assert isinstance(seed, int) and res.images[0].seed == seed == res.metadata["seed"]


@pytest.fixture
async def ws_server() -> AsyncIterator[tuple[str, list[str], dict[str, Any]]]:
    """A real ComfyUI-like /ws endpoint on localhost; sends progress once told the prompt."""
    paths: list[str] = []
    shared: dict[str, Any] = {}

    async def handle(socket: ServerConnection) -> None:
        assert socket.request is not None
        paths.append(socket.request.path)
        fake: FakeComfy = shared["fake"]
        await socket.send(json.dumps({"type": "status", "data": {"status": {}, "sid": "s"}}))
        await fake.submitted.wait()
        await socket.send(json.dumps({"type": "execution_start", "data": {"prompt_id": PROMPT_ID}}))
        await socket.send(b"\x00\x00\x00\x01preview-bytes")
        for step in (1, 2, 4):
            data = {"value": step, "max": 4, "prompt_id": PROMPT_ID, "node": "3"}
            await socket.send(json.dumps({"type": "progress", "data": data}))
        await socket.send(
            json.dumps(
                {"type": "progress", "data": {"value": 1, "max": 2, "prompt_id": "not-ours"}}
            )
        )
        await asyncio.sleep(0.05)
        fake.finished.set()
        await socket.send(
            json.dumps({"type": "executing", "data": {"node": None, "prompt_id": PROMPT_ID}})
        )
        await socket.wait_closed()

    async with serve(handle, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}", paths, shared


async def test_websocket_progress_messages_are_followed(
    ws_server: tuple[str, list[str], dict[str, Any]],
) -> None:
    base_url, paths, shared = ws_server
    fake = FakeComfy([queue(running=(PROMPT_ID,))] * 1000, history())
    shared["fake"] = fake
    server = FakeServer(fake)
    ctx = server.context()
    provider = make(server, base_url=base_url, websocket=True, poll_interval_s=0.05)
    res = await provider.generate(ProviderRequest("x", seed=1), ctx)
    assert res.images[0].data == PNG
    (path,) = paths
    assert urlsplit(path).path == "/ws"
    assert parse_qs(urlsplit(path).query)["clientId"] == [fake.client_id]
    percents = [p for p, _ in ctx.progress_reports]
    assert (31, "step 1/4") in ctx.progress_reports
    assert (95, "step 4/4") in ctx.progress_reports
    assert percents == sorted(percents)


async def test_unreachable_websocket_falls_back_to_polling() -> None:
    fake = FakeComfy([queue(running=(PROMPT_ID,))], history())
    server = FakeServer(fake)
    provider = make(server, base_url="http://127.0.0.1:9", websocket=True)
    res = await provider.generate(ProviderRequest("x"), server.context())
    assert res.images[0].data == PNG


async def test_custom_workflow_mapping_and_output_node(tmp_path: Path) -> None:
    workflow = {
        "10": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "11": {"class_type": "KSampler", "inputs": {"seed": 0, "noise_seed": 0}},
        "20": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
        "21": {"class_type": "SaveImage", "inputs": {"images": ["12", 0]}},
    }
    path = tmp_path / "workflow_api.json"
    path.write_text(json.dumps(workflow))
    outputs = {
        "20": {"images": [{"filename": "tmp.png", "subfolder": "", "type": "temp"}]},
        "21": {"images": IMAGES},
    }
    fake = FakeComfy([], history(outputs=outputs))
    server = FakeServer(fake)
    provider = make(
        server, workflow_path=str(path),
        inputs={"prompt": "10.text", "seed": ["11.seed", "11.noise_seed"]},
    )  # fmt: skip
    res = await provider.generate(ProviderRequest("a tree", seed=5), server.context())
    assert fake.graph["10"]["inputs"]["text"] == "a tree"
    assert fake.graph["11"]["inputs"] == {"seed": 5, "noise_seed": 5}
    assert len(res.images) == 1  # the temp preview is skipped
    assert not provider.models["workflow"].capabilities.negative_prompt


async def test_mapping_to_a_missing_node_is_a_clear_config_error() -> None:
    server = FakeServer(lambda r: reply(500))
    provider = make(server, inputs={"negative_prompt": "99.text"})
    with pytest.raises(InvalidRequest, match="'99'"):
        await provider.generate(ProviderRequest("x", negative_prompt="y"), server.context())
    assert server.requests == []


async def test_custom_workflow_without_prompt_mapping_is_rejected() -> None:
    server = FakeServer(lambda r: reply(500))
    provider = make(server, workflow={"1": {"class_type": "X", "inputs": {}}})
    with pytest.raises(InvalidRequest, match="prompt"):
        await provider.generate(ProviderRequest("x"), server.context())


async def test_ui_format_workflow_is_rejected() -> None:
    server = FakeServer(lambda r: reply(500))
    provider = make(server, workflow={"nodes": [], "links": []}, inputs={"prompt": "6.text"})
    with pytest.raises(InvalidRequest, match="API"):
        await provider.generate(ProviderRequest("x"), server.context())


async def test_checkpoint_models_select_the_checkpoint() -> None:
    fake = FakeComfy([], history())
    server = FakeServer(fake)
    provider = make(server, checkpoints=["sdxl.safetensors"])
    assert set(provider.models) == {"workflow", "sdxl.safetensors"}
    await provider.generate(ProviderRequest("x", model="sdxl.safetensors"), server.context())
    assert fake.graph["4"]["inputs"]["ckpt_name"] == "sdxl.safetensors"


async def test_execution_error_is_transient_with_the_message() -> None:
    error = {
        "prompt_id": PROMPT_ID, "node_id": "4", "node_type": "CheckpointLoaderSimple",
        "exception_message": "Error while deserializing header", "exception_type": "OSError",
        "traceback": ["..."],
    }  # fmt: skip
    final = history(outputs={}, messages=[["execution_error", error]], ok=False)
    server = FakeServer(FakeComfy([], final))
    with pytest.raises(Transient, match="CheckpointLoaderSimple: Error while deserializing"):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_rejected_prompt_is_invalid_request_with_node_errors() -> None:
    rejected = {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {
            "4": {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "ckpt_name: 'missing.safetensors' not in []",
                        "extra_info": {},
                    }
                ],
                "dependent_outputs": ["9"],
                "class_type": "CheckpointLoaderSimple",
            }
        },
    }
    server = FakeServer(lambda r: reply(400, rejected))
    with pytest.raises(InvalidRequest) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert "Prompt outputs failed validation" in info.value.message
    assert "node 4 (CheckpointLoaderSimple): Value not in list" in info.value.message


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (queue(pending=("a", PROMPT_ID)), ("POST", "/queue", {"delete": [PROMPT_ID]})),
        (queue(running=(PROMPT_ID,)), ("POST", "/interrupt", {"prompt_id": PROMPT_ID})),
    ],
)
async def test_cancel_deletes_when_queued_and_interrupts_when_running(
    state: dict[str, Any], expected: tuple[str, str, dict[str, Any]]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            assert request.url.path == "/queue"
            return reply(200, state)
        return httpx.Response(200)

    server = FakeServer(handler)
    await make(server).cancel(PROMPT_ID)
    (posted,) = server.seen("POST")
    assert (posted.method, posted.url.path, json_body(posted)) == expected


async def test_running_past_timeout_is_interrupted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/prompt":
            return reply(200, {"prompt_id": PROMPT_ID, "number": 1, "node_errors": {}})
        if request.url.path == "/queue" and request.method == "GET":
            return reply(200, queue(running=(PROMPT_ID,)))
        if request.url.path.startswith("/history"):
            return reply(200, {})
        return httpx.Response(200)

    server = FakeServer(handler)
    ctx = server.context()
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.2).generate(ProviderRequest("x"), ctx)
    assert ctx.saved_jobs == [PROMPT_ID]
    assert len(server.seen("POST", "/interrupt")) == 1


async def test_prompt_that_vanished_is_transient() -> None:
    fake = FakeComfy([queue()] * 10, history())
    fake.finished = asyncio.Event()  # never set: the history stays empty

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/queue":
            return reply(200, queue())
        return fake(request)

    server = FakeServer(handler)
    with pytest.raises(Transient, match="neither queued"):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_resume_polls_the_saved_prompt_without_submitting() -> None:
    fake = FakeComfy([queue(running=(PROMPT_ID,))], history())
    server = FakeServer(fake)
    ctx = server.context(provider_job_id=PROMPT_ID)
    fake.ctx = ctx
    res = await make(server).generate(ProviderRequest("x", seed=3), ctx)
    assert res.images[0].data == PNG
    assert server.seen("POST") == []
    assert ctx.saved_jobs == []


async def test_5xx_is_transient() -> None:
    server = FakeServer(lambda r: httpx.Response(502, text="bad gateway"))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_malformed_body_is_transient() -> None:
    server = FakeServer(lambda r: httpx.Response(200, content=b"<html>"))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_hang_past_timeout() -> None:
    server = FakeServer(hang())
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.1).generate(ProviderRequest("x"), server.context())


async def test_configured_only_with_a_base_url_and_health_uses_system_stats() -> None:
    server = FakeServer(lambda r: reply(200, {"system": {}, "devices": []}))
    unconfigured = ComfyUIProvider("comfy", ComfyUISettings(), server.client())
    assert not unconfigured.configured
    assert not (await unconfigured.health()).healthy
    provider = make(server)
    assert provider.configured
    assert (await provider.health()).healthy
    assert server.requests[-1].url.path == "/system_stats"


def test_workflow_and_workflow_path_are_exclusive() -> None:
    with pytest.raises(ValueError):
        ComfyUISettings(workflow={}, workflow_path="x.json")
