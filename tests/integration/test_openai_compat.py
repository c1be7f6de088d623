"""The official ``openai`` SDK, unchanged, against a live pixelgate on loopback."""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from PIL import Image

from pixelgate.api.app import create_app
from pixelgate.api.compat.openai import resolve_model
from pixelgate.config import Settings
from pixelgate.errors import NotFound
from tests.conftest import ADMIN_KEY
from tests.fakes import LoopbackServer, png_bytes
from tests.providers.fakes.openai import FakeOpenAIImages

STARTUP_TIMEOUT_S = 20.0


class LiveServer:
    """pixelgate served by uvicorn in a thread (its own runtime and worker)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("pixelgate did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(STARTUP_TIMEOUT_S)

    def sdk(self, api_key: str = ADMIN_KEY, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> Iterator[LiveServer]:
    settings = make_settings(
        host="127.0.0.1",
        port=_free_port(),
        providers={
            "fast": {"kind": "placeholder"},
            "slow": {"kind": "placeholder", "latency_ms": 3000},
            "refusing": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "refused"},
        },
        routing={"default": ["fast"]},
        aliases={"house-style": "fast", "loop-a": "loop-b", "loop-b": "loop-a"},
        sync_timeout_s=1.0,
    )
    with LiveServer(settings) as live:
        yield live


@pytest.fixture
def upstream(
    make_settings: Callable[..., Settings],
) -> Iterator[tuple[LiveServer, FakeOpenAIImages]]:
    """pixelgate whose ``openai`` provider is OpenAI's fake Images API on loopback."""
    fake = FakeOpenAIImages()
    routes = {"/v1/images/generations": fake.route, "/v1/images/edits": fake.route}
    with LoopbackServer(routes) as api:
        settings = make_settings(
            host="127.0.0.1",
            port=_free_port(),
            providers={"openai": {"kind": "openai", "api_key": "sk-x", "base_url": api.url("/v1")}},
            routing={"default": ["openai"]},
        )
        with LiveServer(settings) as live:
            yield live, fake


def _image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_generate_b64_json(server: LiveServer) -> None:
    client = server.sdk()
    result = client.images.generate(
        model="placeholder", prompt="a red fox", size="256x256", response_format="b64_json"
    )
    assert result.created > 0
    [item] = result.data or []
    assert item.url is None
    img = _image(base64.b64decode(item.b64_json or ""))
    assert (img.format, img.size) == ("PNG", (256, 256))
    assert result.size == "256x256" and result.output_format == "png"


def test_generate_url_with_n_and_format(server: LiveServer) -> None:
    client = server.sdk()
    raw = client.images.with_raw_response.generate(
        model="house-style",
        prompt="two boats",
        n=2,
        size="320x192",
        output_format="webp",
        response_format="url",
    )
    result = raw.parse()
    generation_id = raw.headers["x-pixelgate-generation-id"]
    assert generation_id.startswith("gen_")
    assert len(result.data or []) == 2
    digests = set()
    for item in result.data or []:
        assert item.b64_json is None and item.url
        assert item.url.startswith(server.base_url + "/files/")
        fetched = httpx.get(item.url, follow_redirects=True)  # S3: a 307 to the bucket
        assert fetched.status_code == 200
        assert fetched.headers["content-type"] == "image/webp"
        assert _image(fetched.content).size == (320, 192)
        digests.add(hashlib.sha256(fetched.content).hexdigest())
    assert len(digests) == 2
    native = httpx.get(
        f"{server.base_url}/v1/generations/{generation_id}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    assert native["provider"] == "fast" and native["status"] == "SUCCEEDED"
    assert {i["sha256"] for i in native["images"]} == digests


def test_default_response_is_b64_json(server: LiveServer) -> None:
    result = server.sdk().images.generate(prompt="no options", size="64x64")
    [item] = result.data or []
    assert item.b64_json and item.url is None


def test_edit_b64_json_with_mask(server: LiveServer) -> None:
    client = server.sdk()
    result = client.images.edit(
        model="placeholder",
        image=("in.png", png_bytes(96, 64), "image/png"),
        mask=("mask.png", png_bytes(96, 64, (0, 0, 0, 0)), "image/png"),
        prompt="add a moon",
        response_format="b64_json",
    )
    [item] = result.data or []
    img = _image(base64.b64decode(item.b64_json or ""))
    assert img.size == (96, 64)  # size "auto": the input's size


def test_edit_url_with_two_images(server: LiveServer) -> None:
    client = server.sdk()
    result = client.images.edit(
        model="fast",
        image=[
            ("a.png", png_bytes(64, 64), "image/png"),
            ("b.png", png_bytes(32, 32, (0, 0, 255)), "image/png"),
        ],
        prompt="combine",
        size="128x128",
        response_format="url",
    )
    [item] = result.data or []
    fetched = httpx.get(item.url, follow_redirects=True)  # S3: a 307 to the bucket
    assert item.url and _image(fetched.content).size == (128, 128)


def test_stream_sends_a_completed_event(server: LiveServer) -> None:
    stream = server.sdk().images.generate(
        model="placeholder", prompt="streamed", size="64x64", stream=True
    )
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.completed"]
    assert _image(base64.b64decode(events[0].b64_json)).size == (64, 64)


def test_stream_sends_partial_images_as_they_come_then_the_image(
    upstream: tuple[LiveServer, FakeOpenAIImages],
) -> None:
    live, fake = upstream
    raw = live.sdk().images.with_raw_response.generate(
        model="gpt-image-1",
        prompt="a fox in the snow",
        size="1024x1024",
        quality="low",
        stream=True,
        partial_images=2,
    )
    generation_id = raw.headers["x-pixelgate-generation-id"]
    events = list(raw.parse())
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    partials = [e for e in events if e.type == "image_generation.partial_image"]
    assert [e.partial_image_index for e in partials] == [0, 1]
    assert [base64.b64decode(e.b64_json) for e in partials] == fake.partials[:2]
    for event in events:
        assert (event.quality, event.background, event.output_format) == ("low", "auto", "png")
        assert event.created_at > 0
    # previews repeat the requested size, the image tells its own (the fake draws 64x64)
    assert {e.size for e in partials} == {"1024x1024"}
    completed = events[-1]
    assert completed.size == "64x64"
    assert _image(base64.b64decode(completed.b64_json)).size == (64, 64)
    [sent] = fake.requests
    assert (sent["stream"], sent["partial_images"], sent["quality"]) == (True, 2, "low")
    native = httpx.get(
        f"{live.base_url}/v1/generations/{generation_id}/events",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).text
    assert native.count("event: partial_image") == 2


def test_edit_stream_sends_image_edit_events(
    upstream: tuple[LiveServer, FakeOpenAIImages],
) -> None:
    live, fake = upstream
    stream = live.sdk().images.edit(
        model="gpt-image-1",
        image=("in.png", png_bytes(64, 64), "image/png"),
        prompt="add a hat",
        stream=True,
        partial_images=1,
    )
    events = list(stream)
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert base64.b64decode(events[0].b64_json) == fake.partials[0]
    assert fake.requests[0]["stream"] is True and fake.requests[0]["partial_images"] == 1


def test_partial_images_without_stream_are_not_asked_for(
    upstream: tuple[LiveServer, FakeOpenAIImages],
) -> None:
    live, fake = upstream
    result = live.sdk().images.generate(model="gpt-image-1", prompt="a fox", partial_images=2)
    assert len(result.data or []) == 1
    assert "stream" not in fake.requests[0] and "partial_images" not in fake.requests[0]


def test_errors_come_in_openai_shape(server: LiveServer) -> None:
    client = server.sdk(max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        server.sdk(api_key="pg_wrong").images.generate(prompt="x")
    assert auth.value.status_code == 401
    assert set(auth.value.body) >= {"message", "type", "param", "code"}  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="refusing", prompt="forbidden")
    assert refused.value.code == "moderation_blocked"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.images.generate(prompt="x", n=11)
    assert too_many.value.param == "n"
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.images.generate(prompt="x", size="huge")
    assert bad_size.value.param == "size"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.images.generate(prompt="x", model="no-such-model")
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as unconfigured:
        client.images.generate(prompt="x", model="openai/gpt-image-1")
    assert unconfigured.value.code == "provider_not_configured"
    with pytest.raises(openai.BadRequestError):
        client.images.edit(image=("a.txt", b"not an image", "text/plain"), prompt="x")


def test_timeout_is_504_and_not_retried_by_the_sdk(server: LiveServer) -> None:
    client = server.sdk()  # default retries: the SDK must be told not to re-run the job
    with pytest.raises(openai.InternalServerError) as timeout:
        client.images.generate(model="slow", prompt="takes a while")
    assert timeout.value.status_code == 504
    generation_id = timeout.value.response.headers["x-pixelgate-generation-id"]
    listed = httpx.get(
        f"{server.base_url}/v1/generations",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()["data"]
    assert [g["id"] for g in listed] == [generation_id]


def test_model_names_resolve_to_routes(server: LiveServer) -> None:
    from pixelgate.providers.registry import build_providers

    providers = build_providers(server.settings, httpx.AsyncClient())
    aliases = {"house-style": "fast", "nano": "replicate/google/nano-banana"}
    assert resolve_model(None, aliases, providers) == (None, None)
    assert resolve_model("placeholder", aliases, providers) == ("placeholder", None)
    assert resolve_model("house-style", aliases, providers) == ("fast", None)
    assert resolve_model("openai/gpt-image-1", aliases, providers) == ("openai", "gpt-image-1")
    assert resolve_model("nano", aliases, providers) == ("replicate", "google/nano-banana")
    assert resolve_model("dall-e-3", aliases, providers) == ("openai", "dall-e-3")
    with pytest.raises(NotFound):
        resolve_model("unknown", aliases, providers)
