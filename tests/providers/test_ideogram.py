"""Ideogram adapter against a fake v3 multipart / v2 JSON API (PROVIDERS.md §7)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.ideogram import V3_RATIOS, IdeogramProvider, IdeogramSettings
from tests.providers.kit import (
    SECRET,
    FakeServer,
    assert_secret_absent,
    hang,
    json_body,
    multipart,
    reply,
)

URL = "https://ideogram.ai/api/images/ephemeral/abc.png?exp=1&sig=x"
V3_FIELDS = {
    "prompt", "seed", "resolution", "aspect_ratio", "rendering_speed", "magic_prompt",
    "negative_prompt", "num_images", "color_palette", "style_codes", "style_type",
    "style_preset", "custom_model_uri",
}  # fmt: skip


def image(safe: bool = True, seed: int = 12345) -> dict[str, Any]:
    return {
        "url": URL if safe else None,
        "prompt": "a poster, magic-prompted",
        "resolution": "1280x720",
        "upscaled_resolution": None,
        "is_image_safe": safe,
        "seed": seed,
        "style_type": "GENERAL",
    }


def generated(*images: dict[str, Any]) -> dict[str, Any]:
    return {"created": "2025-04-05T12:00:00Z", "data": list(images)}


def make(server: FakeServer, **settings: Any) -> IdeogramProvider:
    options: dict[str, Any] = {"api_key": SecretStr(SECRET)}
    options.update(settings)
    return IdeogramProvider("ideogram", IdeogramSettings(**options), server.client())


async def test_v3_multipart_with_json_color_palette_part() -> None:
    palette = {"members": [{"color_hex": "#b470b3", "color_weight": 0.49}]}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert str(request.url) == "https://api.ideogram.ai/v1/ideogram-v3/generate"
        assert request.headers["api-key"] == SECRET
        assert "authorization" not in request.headers
        form = multipart(request)
        assert form.names() <= V3_FIELDS
        prompt = form.part("prompt")
        assert (prompt.content_type, prompt.data) == ("text/plain", b"a poster that says HELLO")
        assert form.part("rendering_speed").data == b"TURBO"
        assert form.part("aspect_ratio").data == b"16x9"
        assert form.part("aspect_ratio").data.decode() in V3_RATIOS
        assert form.part("num_images").data == b"2"
        assert form.part("seed").data == b"77"
        assert form.part("negative_prompt").data == b"blurry"
        assert form.part("style_type").data == b"DESIGN"
        palette_part = form.part("color_palette")
        assert palette_part.content_type == "application/json"
        assert json.loads(palette_part.data) == palette
        return reply(200, generated(image(seed=77), image(seed=78)))

    server = FakeServer(handler)
    req = ProviderRequest(
        "a poster that says HELLO", model="ideogram-v3-turbo", n=2, width=1920, height=1080,
        seed=77, negative_prompt="blurry", style="design", options={"color_palette": palette},
    )  # fmt: skip
    res = await make(server).generate(req, server.context())
    assert [img.url for img in res.images] == [URL, URL]
    assert [img.seed for img in res.images] == [77, 78]
    assert res.cost_usd == Decimal("0.06")


async def test_v3_is_multipart_even_without_optional_fields() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        form = multipart(request)
        assert form.names() == {"prompt", "rendering_speed", "aspect_ratio", "num_images"}
        assert form.part("rendering_speed").data == b"DEFAULT"
        assert form.part("aspect_ratio").data == b"1x1"
        return reply(200, generated(image()))

    server = FakeServer(handler)
    res = await make(server).generate(ProviderRequest("x"), server.context())
    assert res.model == "ideogram-v3"


async def test_legacy_v2_wraps_json_in_image_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == "https://api.ideogram.ai/generate"
        assert request.headers["api-key"] == SECRET
        assert request.headers["content-type"] == "application/json"
        assert json_body(request) == {
            "image_request": {
                "prompt": "x",
                "model": "V_2",
                "aspect_ratio": "ASPECT_9_16",
                "num_images": 1,
                "seed": 3,
                "negative_prompt": "text",
                "magic_prompt_option": "OFF",
            }
        }
        return reply(200, generated(image()))

    server = FakeServer(handler)
    req = ProviderRequest(
        "x", model="ideogram-v2", width=720, height=1280, seed=3, negative_prompt="text",
        options={"magic_prompt": False},
    )  # fmt: skip
    res = await make(server).generate(req, server.context())
    assert res.images[0].url == URL
    assert res.cost_usd == Decimal("0.08")


async def test_unsafe_images_are_dropped() -> None:
    server = FakeServer(lambda r: reply(200, generated(image(), image(safe=False))))
    res = await make(server).generate(ProviderRequest("x", n=2), server.context())
    assert len(res.images) == 1
    assert res.metadata["dropped_unsafe"] == 1
    assert res.cost_usd == Decimal("0.06")


async def test_all_images_unsafe_is_refused() -> None:
    server = FakeServer(lambda r: reply(200, generated(image(safe=False))))
    with pytest.raises(Refused):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_422_safety_error_is_refused() -> None:
    error = "Prompt provided failed safety check due to the inclusion of prohibited content."
    server = FakeServer(lambda r: reply(422, {"error": error}))
    with pytest.raises(Refused) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert "failed safety check" in info.value.message


async def test_422_other_error_is_invalid_request() -> None:
    server = FakeServer(lambda r: reply(422, {"error": "Resolution not supported"}))
    with pytest.raises(InvalidRequest):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_400_without_body_is_invalid_request() -> None:
    server = FakeServer(lambda r: httpx.Response(400))
    with pytest.raises(InvalidRequest):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_429_with_retry_after() -> None:
    server = FakeServer(lambda r: httpx.Response(429, headers={"Retry-After": "2"}))
    with pytest.raises(ProviderRateLimited) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert info.value.retry_after == 2


async def test_401_is_auth_error_without_the_key() -> None:
    server = FakeServer(lambda r: httpx.Response(401, text=f"bad key {SECRET}"))
    with pytest.raises(ProviderAuthError) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert_secret_absent(info.value)


async def test_5xx_is_transient() -> None:
    server = FakeServer(lambda r: httpx.Response(500, text="oops"))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_malformed_body_is_transient() -> None:
    server = FakeServer(lambda r: reply(200, {"data": [{"url": URL}]}))  # no is_image_safe
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_hang_past_timeout() -> None:
    server = FakeServer(hang())
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.1).generate(ProviderRequest("x"), server.context())


async def test_unknown_model_is_invalid_request() -> None:
    server = FakeServer(lambda r: reply(500))
    with pytest.raises(InvalidRequest):
        await make(server).generate(ProviderRequest("x", model="dall-e-3"), server.context())
    assert server.requests == []


def test_catalog() -> None:
    provider = make(FakeServer(lambda r: reply(500)))
    assert {"ideogram-v3", "ideogram-v3-turbo", "ideogram-v2"} <= set(provider.models)
    assert "16:9" in provider.models["ideogram-v3"].capabilities.aspect_ratios
    assert provider.models["ideogram-v3"].capabilities.max_n == 8
