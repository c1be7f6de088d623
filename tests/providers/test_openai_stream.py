"""OpenAI adapter, streamed answers: ``partial_images`` previews over SSE (PROVIDERS.md §1)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pixelgate.errors import (
    InvalidRequest,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.openai import OpenAIProvider
from tests.fakes import FakeJobContext
from tests.providers.fakes.openai import FakeOpenAIImages
from tests.providers.kit import JPEG, PNG, SECRET, FakeServer, Handler, b64, client, ctx, reply

BASE = "http://fake"


def provider(handler: Handler, **settings: Any) -> OpenAIProvider:
    values: dict[str, Any] = {"kind": "openai", "api_key": SECRET, "base_url": BASE}
    values.update(settings)
    return OpenAIProvider("openai", OpenAIProvider.settings_class(**values), client(handler))


def sse_answer(*events: dict[str, Any], raw: bytes = b"") -> Handler:
    """A server that streams exactly these events (and ``raw`` after them)."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = b"".join(
            f"event: {e.get('type', 'error')}\ndata: {json.dumps(e)}\n\n".encode() for e in events
        )
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body + raw
        )

    return handler


async def test_partial_images_are_handed_over_in_order_as_they_arrive() -> None:
    job: FakeJobContext

    async def before(position: int) -> None:
        # the stream is read event by event: each preview is with the job before the next
        assert len(job.partials) == position

    fake = FakeOpenAIImages(pause=before)
    recorder = FakeServer(fake.handler)
    p = provider(recorder)
    job = ctx(p.http)
    request = ProviderRequest(prompt="a cat", model="gpt-image-1", quality="high", partial_images=2)
    result = await p.generate(request, job)

    assert fake.requests == [
        {
            "model": "gpt-image-1",
            "prompt": "a cat",
            "n": 1,
            "size": "1024x1024",
            "quality": "high",
            "output_format": "png",
            "stream": True,
            "partial_images": 2,
        }
    ]
    assert recorder.requests[0].url.path == "/images/generations"
    assert [(i, data, fmt) for i, data, fmt in job.partials] == [
        (0, fake.partials[0], "png"),
        (1, fake.partials[1], "png"),
    ]
    [image] = result.images
    assert image.data == fake.image and image.content_type == "image/png"
    assert result.cost_usd == Decimal("40") * 4160 / 1_000_000


async def test_edit_streams_image_edit_events() -> None:
    fake = FakeOpenAIImages()
    recorder = FakeServer(fake.handler)
    p = provider(recorder)
    job = ctx(p.http)
    request = ProviderRequest(
        prompt="add a hat", model="gpt-image-1", edit_image=PNG, format="webp", partial_images=3
    )
    result = await p.generate(request, job)
    assert recorder.requests[0].url.path == "/images/edits"
    assert fake.requests[0]["stream"] is True and fake.requests[0]["partial_images"] == 3
    assert [i for i, _, _ in job.partials] == [0, 1, 2]
    assert {fmt for _, _, fmt in job.partials} == {"webp"}
    assert result.images[0].data == fake.image


@pytest.mark.parametrize(
    "request_",
    [
        ProviderRequest(prompt="x", model="gpt-image-1"),
        ProviderRequest(prompt="x", model="gpt-image-1", partial_images=0),
        # partial events do not say which image they belong to: several images never stream
        ProviderRequest(prompt="x", model="gpt-image-1", n=2, partial_images=2),
    ],
    ids=["not-asked", "zero", "several-images"],
)
async def test_without_previews_the_request_is_not_streamed(request_: ProviderRequest) -> None:
    fake = FakeOpenAIImages()
    p = provider(fake.handler)
    job = ctx(p.http)
    result = await p.generate(request_, job)
    assert "stream" not in fake.requests[0] and "partial_images" not in fake.requests[0]
    assert len(result.images) == request_.n and job.partials == []


async def test_dalle_never_streams() -> None:
    recorder = FakeServer(
        lambda request: reply(200, {"created": 1, "data": [{"b64_json": b64(PNG)}]})
    )
    p = provider(recorder)
    request = ProviderRequest(prompt="x", model="dall-e-3", partial_images=2)
    await p.generate(request, ctx(p.http))
    body = json.loads(recorder.requests[0].content)
    assert "stream" not in body and "partial_images" not in body


async def test_a_server_that_ignores_stream_answers_json() -> None:
    body = {"created": 1, "data": [{"b64_json": b64(JPEG)}], "output_format": "jpeg"}
    p = provider(lambda request: reply(200, body))
    job = ctx(p.http)
    result = await p.generate(ProviderRequest(prompt="x", partial_images=1), job)
    assert result.images[0].data == JPEG and job.partials == []


async def test_a_broken_preview_is_skipped() -> None:
    handler = sse_answer(
        {"type": "image_generation.partial_image", "b64_json": "%%%", "partial_image_index": 0},
        {"type": "image_generation.partial_image", "b64_json": b64(PNG), "partial_image_index": 1},
        {"type": "image_generation.completed", "b64_json": b64(PNG), "output_format": "png"},
    )
    p = provider(handler)
    job = ctx(p.http)
    await p.generate(ProviderRequest(prompt="x", partial_images=2), job)
    assert [i for i, _, _ in job.partials] == [1]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"code": "moderation_blocked", "message": "rejected", "type": "x"}, Refused),
        ({"code": "rate_limit_exceeded", "message": "slow down", "type": "x"}, ProviderRateLimited),
        ({"code": None, "message": "bad size", "type": "invalid_request_error"}, InvalidRequest),
        ({"code": "server_error", "message": "oops", "type": "server_error"}, Transient),
    ],
)
async def test_an_error_event_is_mapped(error: dict[str, Any], expected: type) -> None:
    partial = {"type": "image_generation.partial_image", "b64_json": b64(PNG)}
    p = provider(sse_answer(partial, {"type": "error", "error": error}))
    job = ctx(p.http)
    with pytest.raises(expected) as raised:
        await p.generate(ProviderRequest(prompt="x", partial_images=1), job)
    assert error["message"] in raised.value.message
    assert len(job.partials) == 1


async def test_a_stream_without_the_completed_event_is_transient() -> None:
    partial = {"type": "image_generation.partial_image", "b64_json": b64(PNG)}
    p = provider(sse_answer(partial))
    with pytest.raises(Transient, match="ended before"):
        await p.generate(ProviderRequest(prompt="x", partial_images=1), ctx(p.http))


async def test_a_malformed_event_is_transient() -> None:
    p = provider(sse_answer(raw=b"data: {not json\n\n"))
    with pytest.raises(Transient, match="malformed"):
        await p.generate(ProviderRequest(prompt="x", partial_images=1), ctx(p.http))


async def test_an_http_error_before_the_stream_is_mapped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": "slow", "type": "x", "param": None, "code": "rate_limit"}}
        return reply(429, body, {"retry-after": "3"})

    p = provider(handler)
    with pytest.raises(ProviderRateLimited) as raised:
        await p.generate(ProviderRequest(prompt="x", partial_images=1), ctx(p.http))
    assert raised.value.retry_after == 3.0


async def test_a_stalled_stream_times_out() -> None:
    async def stall(position: int) -> None:
        await asyncio.sleep(5)

    p = provider(FakeOpenAIImages(pause=stall).handler, timeout_s=0.1)
    job = ctx(p.http)
    with pytest.raises(ProviderTimeout):
        await p.generate(ProviderRequest(prompt="x", partial_images=2), job)
    assert len(job.partials) == 1  # the first preview came before the stall


async def test_a_dropped_connection_is_transient() -> None:
    async def broken() -> Any:
        yield b"event: image_generation.partial_image\n"
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=broken())

    p = provider(handler)
    with pytest.raises(Transient):
        await p.generate(ProviderRequest(prompt="x", partial_images=1), ctx(p.http))
