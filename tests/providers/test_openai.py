"""OpenAI adapter against a fake Images API that checks requests per PROVIDERS.md §1."""

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
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.openai import (
    OpenAICompatibleProvider,
    OpenAICompatibleSettings,
    OpenAIProvider,
    OpenAISettings,
    nearest_size,
)
from tests.providers.kit import (
    JPEG,
    PNG,
    SECRET,
    FakeServer,
    Handler,
    assert_secret_absent,
    b64,
    client,
    connect_error,
    ctx,
    hang,
    json_body,
    multipart,
    read_timeout,
    reply,
)

MASK = b"\x89PNG\r\n\x1a\n" + b"mask" * 8
BASE = "http://fake"
GPT_SIZES = {"auto", "1024x1024", "1536x1024", "1024x1536"}
DALLE3_SIZES = {"1024x1024", "1792x1024", "1024x1792"}
DALLE2_SIZES = {"256x256", "512x512", "1024x1024"}
GPT_ONLY = {"output_format", "output_compression", "background", "moderation"}
USAGE = {
    "input_tokens": 50,
    "output_tokens": 4160,
    "total_tokens": 4210,
    "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
    "output_tokens_details": {"image_tokens": 4160, "text_tokens": 0},
}


def provider(handler: Handler, **settings: Any) -> OpenAIProvider:
    values: dict[str, Any] = {"kind": "openai", "api_key": SECRET, "base_url": BASE}
    values.update(settings)
    return OpenAIProvider("openai", OpenAIProvider.settings_class(**values), client(handler))


def check_auth(request: httpx.Request) -> None:
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def check_generation(body: dict[str, Any]) -> None:
    """``CreateImageRequest`` as PROVIDERS.md §1 describes it."""
    allowed = {
        "prompt", "model", "n", "size", "quality", "response_format", "output_format",
        "output_compression", "background", "moderation", "style", "user",
    }  # fmt: skip
    assert set(body) <= allowed, set(body) - allowed
    assert isinstance(body["prompt"], str) and body["prompt"]
    model = body["model"]
    assert isinstance(body["n"], int) and 1 <= body["n"] <= 10
    if model.startswith("gpt-image"):
        assert body["size"] in GPT_SIZES
        assert body.get("quality", "auto") in {"auto", "low", "medium", "high"}
        assert body.get("output_format", "png") in {"png", "jpeg", "webp"}
        assert body.get("background", "auto") in {"auto", "transparent", "opaque"}
        assert "response_format" not in body and "style" not in body
        if body.get("background") == "transparent":
            assert body.get("output_format", "png") in {"png", "webp"}
    elif model == "dall-e-3":
        assert body["n"] == 1
        assert body["size"] in DALLE3_SIZES
        assert body.get("quality", "standard") in {"standard", "hd"}
        assert body.get("style", "vivid") in {"vivid", "natural"}
        assert body.get("response_format", "url") in {"url", "b64_json"}
        assert not GPT_ONLY & set(body)
    elif model == "dall-e-2":
        assert body["size"] in DALLE2_SIZES
        assert body.get("response_format", "url") in {"url", "b64_json"}
        assert not GPT_ONLY & set(body) and "style" not in body
    else:
        raise AssertionError(f"unexpected model {model}")


def images_response(body: dict[str, Any], image: bytes = PNG) -> dict[str, Any]:
    n = body["n"]
    if body["model"].startswith("gpt-image"):
        return {
            "created": 1713833628,
            "data": [{"b64_json": b64(image)} for _ in range(n)],
            "background": "opaque",
            "output_format": body.get("output_format", "png"),
            "size": body["size"],
            "quality": "high",
            "usage": USAGE,
        }
    if body.get("response_format", "url") == "url":
        data = [{"url": f"https://files.example/img-{i}.png"} for i in range(n)]
    else:
        data = [{"b64_json": b64(image)} for _ in range(n)]
    if body["model"] == "dall-e-3":
        for item in data:
            item["revised_prompt"] = "a revised prompt"
    return {"created": 1713833628, "data": data}


def generations_server(request: httpx.Request) -> httpx.Response:
    assert request.method == "POST"
    assert request.url.path == "/images/generations"
    check_auth(request)
    body = json_body(request)
    check_generation(body)
    return reply(200, images_response(body), {"x-request-id": "req_123"})


def error(
    status: int, message: str, code: str | None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        check_auth(request)
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return reply(status, body, headers)

    return handler


# -- success ---------------------------------------------------------------------------


async def test_gpt_image_generates_base64_images_and_costs_from_usage() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder)
    request = ProviderRequest(prompt="a cat", model="gpt-image-1", n=2, quality="high")
    result = await p.generate(request, ctx(p.http))
    assert [img.data for img in result.images] == [PNG, PNG]
    assert all(img.content_type == "image/png" and img.url is None for img in result.images)
    assert result.model == "gpt-image-1"
    assert result.cost_usd == Decimal("40") * 4160 / 1_000_000
    assert result.metadata["request_id"] == "req_123"
    body = json.loads(recorder.requests[0].content)
    assert body == {
        "model": "gpt-image-1",
        "prompt": "a cat",
        "n": 2,
        "size": "1024x1024",
        "quality": "high",
        "output_format": "png",
    }


async def test_gpt_image_transparent_background_and_format() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder)
    request = ProviderRequest(
        prompt="a logo", model="gpt-image-1", background="transparent", format="webp"
    )
    result = await p.generate(request, ctx(p.http))
    body = json.loads(recorder.requests[0].content)
    assert body["background"] == "transparent" and body["output_format"] == "webp"
    assert result.images[0].content_type == "image/webp"


async def test_transparent_jpeg_request_asks_for_png() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder)
    request = ProviderRequest(
        prompt="x", model="gpt-image-1", background="transparent", format="jpeg"
    )
    await p.generate(request, ctx(p.http))
    assert json.loads(recorder.requests[0].content)["output_format"] == "png"


async def test_dalle3_returns_url_images_without_downloading() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder, response_format="url")
    request = ProviderRequest(
        prompt="a cat", model="dall-e-3", width=1920, height=1080, quality="hd", style="natural"
    )
    result = await p.generate(request, ctx(p.http))
    assert len(recorder.requests) == 1  # the URL is the pipeline's to fetch
    assert result.images[0].url == "https://files.example/img-0.png"
    assert result.images[0].data is None
    body = json.loads(recorder.requests[0].content)
    assert body["size"] == "1792x1024" and body["quality"] == "hd" and body["style"] == "natural"
    assert body["response_format"] == "url"
    assert result.cost_usd == Decimal("0.12")
    assert result.metadata["revised_prompt"] == ["a revised prompt"]


async def test_dalle3_defaults_to_base64() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder)
    result = await p.generate(ProviderRequest(prompt="a cat", model="dall-e-3"), ctx(p.http))
    body = json.loads(recorder.requests[0].content)
    assert body["response_format"] == "b64_json"
    assert "quality" not in body
    assert result.images[0].data == PNG and result.images[0].content_type == "image/png"
    assert result.cost_usd == Decimal("0.04")


async def test_url_can_be_chosen_per_request() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder)
    request = ProviderRequest(prompt="a", model="dall-e-2", n=3, options={"response_format": "url"})
    result = await p.generate(request, ctx(p.http))
    assert [img.url for img in result.images] == [
        f"https://files.example/img-{i}.png" for i in range(3)
    ]
    assert result.cost_usd == Decimal("0.02") * 3


async def test_dalle3_rejects_n_above_one_without_calling() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder)
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="a", model="dall-e-3", n=2), ctx(p.http))
    assert recorder.requests == []


async def test_gpt_image_rejects_more_than_ten() -> None:
    p = provider(generations_server)
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="a", model="gpt-image-1", n=11), ctx(p.http))


async def test_unknown_model_is_invalid_request() -> None:
    p = provider(generations_server)
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="a", model="dall-e-9"), ctx(p.http))


# -- edits -----------------------------------------------------------------------------


def edits_server(expect_part: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.url.path == "/images/edits"
        check_auth(request)
        form = multipart(request)
        allowed = {
            "image", "image[]", "mask", "prompt", "model", "n", "size", "quality",
            "response_format", "output_format", "output_compression", "background",
            "input_fidelity", "user",
        }  # fmt: skip
        assert form.names() <= allowed, form.names() - allowed
        images = form.files(expect_part)
        assert images and len(images) <= 16
        assert not form.files("image" if expect_part == "image[]" else "image[]")
        assert all(p.content_type in ("image/png", "image/jpeg", "image/webp") for p in images)
        model = form.field("model")
        n = int(form.field("n"))
        assert form.field("prompt")
        size = form.field("size")
        assert size in {"256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "auto"}
        if model == "dall-e-2":
            assert len(images) == 1
        response = {
            "created": 1,
            "data": [{"b64_json": b64(PNG)} for _ in range(n)],
            "output_format": "png",
        }
        return reply(200, response)

    return handler


async def test_gpt_image_edit_sends_images_and_mask_as_multipart() -> None:
    recorder = FakeServer(edits_server("image[]"))
    p = provider(recorder)
    request = ProviderRequest(
        prompt="add a hat",
        model="gpt-image-1",
        edit_image=PNG,
        reference_image=JPEG,
        mask=MASK,
        quality="medium",
        width=1024,
        height=1536,
    )
    result = await p.generate(request, ctx(p.http))
    assert result.images[0].data == PNG
    form = multipart(recorder.requests[0])
    images = form.files("image[]")
    assert [part.data for part in images] == [PNG, JPEG]  # the mask applies to the first
    assert [part.content_type for part in images] == ["image/png", "image/jpeg"]
    (mask,) = form.files("mask")
    assert mask.data == MASK and mask.content_type == "image/png"
    assert form.field("quality") == "medium"
    assert form.field("size") == "1024x1536"
    assert form.field("output_format") == "png"
    # no usage block: the table price
    assert result.cost_usd == Decimal("0.063")


async def test_gpt_image_reference_image_goes_through_edits() -> None:
    recorder = FakeServer(edits_server("image[]"))
    p = provider(recorder)
    request = ProviderRequest(prompt="in this style", model="gpt-image-1-mini", reference_image=PNG)
    await p.generate(request, ctx(p.http))
    form = multipart(recorder.requests[0])
    assert [part.data for part in form.files("image[]")] == [PNG]
    assert "mask" not in form.names()


async def test_dalle2_edit_uses_single_image_part() -> None:
    recorder = FakeServer(edits_server("image"))
    p = provider(recorder)
    request = ProviderRequest(
        prompt="fix", model="dall-e-2", edit_image=PNG, mask=MASK, width=512, height=512
    )
    await p.generate(request, ctx(p.http))
    form = multipart(recorder.requests[0])
    assert form.field("response_format") == "b64_json"
    assert form.field("size") == "512x512"


async def test_dalle3_cannot_edit() -> None:
    recorder = FakeServer(edits_server("image"))
    p = provider(recorder)
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="x", model="dall-e-3", edit_image=PNG), ctx(p.http))
    with pytest.raises(InvalidRequest):
        await p.generate(
            ProviderRequest(prompt="x", model="dall-e-2", reference_image=PNG), ctx(p.http)
        )
    assert recorder.requests == []


# -- size mapping and prices --------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "width", "height", "aspect", "expected"),
    [
        ("gpt-image-1", 1024, 1024, None, "1024x1024"),
        ("gpt-image-1", 1920, 1080, None, "1536x1024"),
        ("gpt-image-1", 1080, 1920, None, "1024x1536"),
        ("gpt-image-1", 1100, 1000, None, "1024x1024"),
        ("gpt-image-1", 512, 512, "3:2", "1536x1024"),
        ("dall-e-3", 1920, 1080, None, "1792x1024"),
        ("dall-e-3", 600, 1000, None, "1024x1792"),
        ("dall-e-2", 300, 300, None, "256x256"),
        ("dall-e-2", 500, 520, None, "512x512"),
        ("dall-e-2", 2048, 1024, None, "1024x1024"),
    ],
)
async def test_size_maps_to_nearest_allowed_by_aspect_ratio(
    model: str, width: int, height: int, aspect: str | None, expected: str
) -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder)
    request = ProviderRequest(
        prompt="x", model=model, width=width, height=height, aspect_ratio=aspect
    )
    result = await p.generate(request, ctx(p.http))
    assert json.loads(recorder.requests[0].content)["size"] == expected
    assert result.metadata["size"] == expected


def test_nearest_size_prefers_ratio_then_area() -> None:
    sizes = ((256, 256), (512, 512), (1024, 1024))
    assert nearest_size(sizes, 700, 700) == (512, 512)
    assert nearest_size(sizes, 800, 800) == (1024, 1024)
    assert nearest_size((), 800, 600) == (800, 600)


@pytest.mark.parametrize(
    ("model", "quality", "width", "height", "n", "expected"),
    [
        ("gpt-image-1", "low", 1024, 1024, 1, "0.011"),
        ("gpt-image-1", "medium", 1536, 1024, 1, "0.063"),
        ("gpt-image-1", "high", 1024, 1536, 2, "0.50"),
        ("gpt-image-1", None, 1024, 1024, 1, "0.167"),  # auto priced as high (upper bound)
        ("gpt-image-1", "auto", 1024, 1024, 1, "0.167"),
        ("gpt-image-1", "hd", 1024, 1024, 1, "0.167"),
        ("gpt-image-1-mini", "medium", 1024, 1024, 1, "0.011"),
        ("gpt-image-1-mini", "low", 1536, 1024, 3, "0.018"),
        ("dall-e-3", None, 1024, 1024, 1, "0.04"),
        ("dall-e-3", "hd", 1792, 1024, 1, "0.12"),
        ("dall-e-3", "standard", 1024, 1792, 1, "0.08"),
        ("dall-e-2", None, 256, 256, 1, "0.016"),
        ("dall-e-2", None, 512, 512, 4, "0.072"),
        ("dall-e-2", None, 1024, 1024, 1, "0.02"),
    ],
)
def test_price_table(
    model: str, quality: str | None, width: int, height: int, n: int, expected: str
) -> None:
    p = provider(generations_server)
    request = ProviderRequest(
        prompt="x", model=model, quality=quality, width=width, height=height, n=n
    )
    assert p.price(request) == Decimal(expected)


def test_catalog_lists_models_with_capabilities() -> None:
    p = provider(generations_server)
    assert set(p.models) == {"gpt-image-1", "gpt-image-1-mini", "dall-e-3", "dall-e-2"}
    gpt = p.models["gpt-image-1"].capabilities
    assert gpt.edit and gpt.mask and gpt.transparency and gpt.reference_image
    assert gpt.max_n == 10 and set(gpt.output_formats) == {"png", "jpeg", "webp"}
    assert p.models["dall-e-3"].capabilities.max_n == 1
    assert not p.models["dall-e-3"].capabilities.edit
    assert p.models["dall-e-3"].price_usd == Decimal("0.04")
    assert p.default_model == "gpt-image-1"


async def test_cost_falls_back_to_table_without_usage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        check_generation(json_body(request))
        return reply(200, {"created": 1, "data": [{"b64_json": b64(PNG)}]})

    p = provider(handler)
    request = ProviderRequest(prompt="x", model="gpt-image-1", quality="low")
    result = await p.generate(request, ctx(p.http))
    assert result.cost_usd == Decimal("0.011")


# -- errors ---------------------------------------------------------------------------


async def test_moderation_block_is_refused_with_provider_message() -> None:
    message = "Your request was rejected by the safety system. safety_violations=[sexual]."
    body = error(400, message, "moderation_blocked", "image_generation_user_error")
    p = provider(answer(400, body))
    with pytest.raises(Refused) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert message in info.value.message
    assert info.value.code == "content_refused"
    assert not info.value.retryable


async def test_dalle_content_policy_violation_is_refused() -> None:
    body = error(
        400, "This request has been blocked by our content filters.", "content_policy_violation"
    )
    p = provider(answer(400, body))
    with pytest.raises(Refused, match="blocked by our content filters"):
        await p.generate(ProviderRequest(prompt="x", model="dall-e-3"), ctx(p.http))


async def test_other_400_is_invalid_request() -> None:
    body = error(400, "Invalid size", "invalid_value")
    p = provider(answer(400, body))
    with pytest.raises(InvalidRequest, match="Invalid size"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "3", "x-should-retry": "false"}, 3.0),
        ({}, None),
    ],
)
async def test_429_is_rate_limited_with_retry_after(
    headers: dict[str, str], expected: float | None
) -> None:
    body = error(429, "Rate limit reached for images per minute", "rate_limit_exceeded", "requests")
    p = provider(answer(429, body, headers))
    with pytest.raises(ProviderRateLimited) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert info.value.retry_after == expected
    assert info.value.retryable


async def test_insufficient_quota_takes_the_provider_out() -> None:
    body = error(429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota")
    p = provider(answer(429, body))
    with pytest.raises(ProviderAuthError, match="quota"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize("status", [401, 403])
async def test_bad_key_is_auth_error_and_key_is_not_echoed(status: int) -> None:
    # OpenAI quotes (part of) the key back; a careless server may quote all of it
    body = error(status, f"Incorrect API key provided: {SECRET}.", "invalid_api_key")
    p = provider(answer(status, body))
    with pytest.raises(ProviderAuthError) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert "Incorrect API key provided" in info.value.message
    assert_secret_absent(info.value)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_transient(status: int) -> None:
    body = error(status, "The server had an error", None, "server_error")
    p = provider(answer(status, body))
    with pytest.raises(Transient) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert info.value.retryable and info.value.status_code == status


@pytest.mark.parametrize(
    "body",
    [
        b"<html>bad gateway</html>",
        b'{"created": 1}',
        b'{"created": 1, "data": []}',
        b'{"created": 1, "data": [{}]}',
        b'{"created": 1, "data": [{"b64_json": "!!not base64!!"}]}',
        b'{"created": "yesterday", "data": "none"}',
    ],
)
async def test_malformed_success_body_is_transient(body: bytes) -> None:
    p = provider(answer(200, body, {"content-type": "application/json"}))
    with pytest.raises(Transient):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_hang_past_timeout_is_provider_timeout() -> None:
    p = provider(hang(), timeout_s=0.05)
    with pytest.raises(ProviderTimeout):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_read_timeout_is_provider_timeout() -> None:
    p = provider(read_timeout)
    with pytest.raises(ProviderTimeout):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_connection_error_is_transient() -> None:
    p = provider(connect_error)
    with pytest.raises(Transient):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_missing_key_fails_before_any_request() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder, api_key=None)
    assert not p.configured
    with pytest.raises(ProviderAuthError):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert recorder.requests == []


def echo_key_handler(status: int) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"]
        return reply(status, error(status, f"echo {key} {SECRET}", "moderation_blocked"))

    return handler


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 429, 500, 503])
async def test_api_key_never_appears_in_error_messages(status: int) -> None:
    p = provider(echo_key_handler(status))
    with pytest.raises(ProviderError) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert_secret_absent(info.value)


# -- headers, health --------------------------------------------------------------------


async def test_organization_and_project_headers() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder, organization="org-1", project="proj_1")
    await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    sent = recorder.requests[0].headers
    assert sent["openai-organization"] == "org-1" and sent["openai-project"] == "proj_1"


async def test_health_lists_models() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and request.url.path == "/models"
        check_auth(request)
        return reply(200, {"object": "list", "data": []})

    health = await provider(handler).health()
    assert health.healthy and health.latency_ms is not None


async def test_health_reports_bad_key_and_outage() -> None:
    bad = await provider(answer(401, error(401, "bad key", "invalid_api_key"))).health()
    assert not bad.healthy and bad.status == "auth_failed"
    down = await provider(connect_error).health()
    assert not down.healthy and down.status == "unreachable"
    broken = await provider(answer(500, error(500, "oops", None))).health()
    assert not broken.healthy


async def test_health_without_key_does_not_call() -> None:
    recorder = FakeServer(generations_server)
    health = await provider(recorder, api_key=None).health()
    assert not health.healthy and health.status == "not_configured"
    assert recorder.requests == []


def test_plain_settings_are_upgraded() -> None:
    from pixelgate.providers.base import ProviderSettings

    settings = ProviderSettings(kind="openai", api_key=SecretStr(SECRET))
    p = OpenAIProvider("openai", settings, client(generations_server))
    assert isinstance(p.settings, OpenAISettings)
    assert p.base_url == "https://api.openai.com/v1"


# -- OpenAI-compatible servers --------------------------------------------------------------


def compat(handler: Handler, **settings: Any) -> OpenAICompatibleProvider:
    values: dict[str, Any] = {"kind": "openai_compatible", "base_url": "http://local:8080/v1"}
    values.update(settings)
    return OpenAICompatibleProvider("local", OpenAICompatibleSettings(**values), client(handler))


def compat_server(request: httpx.Request) -> httpx.Response:
    assert request.url.host == "local" and request.url.path == "/v1/images/generations"
    body = json_body(request)
    assert set(body) <= {"model", "prompt", "n", "size", "response_format", "quality", "style"}
    width, _, height = body["size"].partition("x")
    assert width.isdigit() and height.isdigit()
    data = [{"b64_json": b64(PNG)} for _ in range(body["n"])]
    return reply(200, {"created": 1, "data": data})


async def test_compatible_server_passes_any_size_and_needs_no_key() -> None:
    recorder = FakeServer(compat_server)
    p = compat(recorder, models=["sdxl", "flux"])
    assert p.configured
    assert list(p.models) == ["sdxl", "flux"]
    request = ProviderRequest(prompt="x", model="flux", width=800, height=600, n=2)
    result = await p.generate(request, ctx(p.http))
    assert len(result.images) == 2
    sent = recorder.requests[0]
    assert "authorization" not in sent.headers
    body = json.loads(sent.content)
    assert body["size"] == "800x600" and body["model"] == "flux"
    assert body["response_format"] == "b64_json"
    assert result.cost_usd == Decimal("0")


async def test_compatible_server_sends_key_when_set_and_limits_n() -> None:
    recorder = FakeServer(compat_server)
    p = compat(recorder, api_key=SECRET, price_usd="0.002")
    await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert recorder.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert p.price(ProviderRequest(prompt="x", n=3)) == Decimal("0.006")
    caps = p.models["default"].capabilities
    assert caps.max_n == 4 and caps.sizes == () and caps.output_formats == ("png",)
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="x", n=5), ctx(p.http))


def test_compatible_needs_base_url() -> None:
    p = OpenAICompatibleProvider(
        "local", OpenAICompatibleSettings(kind="openai_compatible"), client(compat_server)
    )
    assert not p.configured


async def test_compatible_health_tolerates_missing_models_endpoint() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="not found")

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="down")

    assert (await compat(handler).health()).healthy
    assert not (await compat(down).health()).healthy


async def test_moderation_setting_is_sent_on_generations_only() -> None:
    recorder = FakeServer(generations_server)
    p = provider(recorder, moderation="low")
    await p.generate(ProviderRequest(prompt="x", model="gpt-image-1"), ctx(p.http))
    assert json.loads(recorder.requests[0].content)["moderation"] == "low"

    edits = FakeServer(edits_server("image[]"))
    p = provider(edits, moderation="low")
    await p.generate(ProviderRequest(prompt="x", reference_image=PNG), ctx(p.http))
    assert "moderation" not in multipart(edits.requests[0]).names()


async def test_content_type_follows_the_format_sent_when_the_answer_omits_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json_body(request)
        check_generation(body)
        assert body["output_format"] == "png"
        return reply(200, {"created": 1, "data": [{"b64_json": b64(PNG)}]})

    p = provider(handler)
    request = ProviderRequest(prompt="x", background="transparent", format="jpeg")
    result = await p.generate(request, ctx(p.http))
    assert result.images[0].content_type == "image/png"
