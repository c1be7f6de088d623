"""Gemini adapter against a fake ``generateContent`` server checked per PROVIDERS.md §2."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)
from pixelgate.providers._shapes import nearest_aspect_ratio
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.gemini import GeminiProvider
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
    read_timeout,
    reply,
)

MODEL = "gemini-2.5-flash-image"
PATH = f"/v1beta/models/{MODEL}:generateContent"
RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
USAGE = {
    "promptTokenCount": 11,
    "candidatesTokenCount": 1290,
    "totalTokenCount": 1301,
    "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
}


def provider(handler: Handler, **settings: Any) -> GeminiProvider:
    values: dict[str, Any] = {
        "kind": "gemini",
        "api_key": SECRET,
        "base_url": "http://fake/v1beta",
    }
    values.update(settings)
    return GeminiProvider("gemini", GeminiProvider.settings_class(**values), client(handler))


def check_request(request: httpx.Request) -> dict[str, Any]:
    assert request.method == "POST"
    assert request.url.path == PATH
    assert request.headers["x-goog-api-key"] == SECRET
    assert "authorization" not in request.headers
    assert "key" not in request.url.params  # the key travels in the header only
    body = json_body(request)
    assert set(body) <= {"contents", "generationConfig", "safetySettings", "systemInstruction"}
    (content,) = body["contents"]
    assert content["role"] == "user"
    parts = content["parts"]
    assert isinstance(parts[0]["text"], str) and parts[0]["text"]
    for part in parts[1:]:
        assert set(part) == {"inlineData"}
        inline = part["inlineData"]
        assert inline["mimeType"] in {"image/png", "image/jpeg", "image/webp"}
        base64.b64decode(inline["data"], validate=True)
    config = body["generationConfig"]
    assert "IMAGE" in config["responseModalities"]
    assert set(config["responseModalities"]) <= {"TEXT", "IMAGE"}
    assert set(config["imageConfig"]) <= {"aspectRatio", "personGeneration"}
    assert config["imageConfig"]["aspectRatio"] in RATIOS
    return body


def image_answer(usage: bool = True, image: bytes = PNG) -> dict[str, Any]:
    body: dict[str, Any] = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Here is your image"},
                        {"inlineData": {"mimeType": "image/png", "data": b64(image)}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "modelVersion": MODEL,
        "responseId": "resp-1",
    }
    if usage:
        body["usageMetadata"] = USAGE
    return body


def server(request: httpx.Request) -> httpx.Response:
    check_request(request)
    return reply(200, image_answer())


def google_error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        check_request(request)
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return reply(status, body, headers)

    return handler


# -- success ---------------------------------------------------------------------------


async def test_generates_inline_image_and_costs_from_usage() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    result = await p.generate(ProviderRequest(prompt="a cat in a hat"), ctx(p.http))
    (image,) = result.images
    assert image.data == PNG and image.content_type == "image/png" and image.url is None
    assert result.model == MODEL
    assert result.cost_usd == Decimal("30") * 1290 / 1_000_000
    body = json.loads(recorder.requests[0].content)
    assert body["contents"][0]["parts"] == [{"text": "a cat in a hat"}]
    assert body["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "1:1"},
    }


async def test_cost_without_usage_is_the_per_image_price() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        check_request(request)
        return reply(200, image_answer(usage=False))

    p = provider(handler)
    result = await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert result.cost_usd == Decimal("0.039")
    assert p.price(ProviderRequest(prompt="x", n=2)) == Decimal("0.078")


async def test_reference_and_edit_images_are_inline_parts() -> None:
    recorder = FakeServer(server)
    p = provider(recorder, person_generation="ALLOW_ADULT")
    request = ProviderRequest(prompt="make it blue", edit_image=PNG, reference_image=JPEG)
    await p.generate(request, ctx(p.http))
    body = json.loads(recorder.requests[0].content)
    parts = body["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}}
    assert parts[2] == {"inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)}}
    assert body["generationConfig"]["imageConfig"]["personGeneration"] == "ALLOW_ADULT"


@pytest.mark.parametrize(
    ("width", "height", "aspect", "expected"),
    [
        (1024, 1024, None, "1:1"),
        (1920, 1080, None, "16:9"),
        (1080, 1920, None, "9:16"),
        (1024, 1536, None, "2:3"),
        (2560, 1080, None, "21:9"),
        (1200, 900, None, "4:3"),
        (1024, 1024, "21:9", "21:9"),
        (1024, 1024, "2:1", "16:9"),
    ],
)
async def test_aspect_ratio_maps_to_nearest_supported(
    width: int, height: int, aspect: str | None, expected: str
) -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    request = ProviderRequest(prompt="x", width=width, height=height, aspect_ratio=aspect)
    result = await p.generate(request, ctx(p.http))
    sent = json.loads(recorder.requests[0].content)
    assert sent["generationConfig"]["imageConfig"]["aspectRatio"] == expected
    assert result.metadata["aspect_ratio"] == expected


def test_catalog() -> None:
    p = provider(server)
    assert p.default_model == MODEL
    caps = p.models[MODEL].capabilities
    assert caps.edit and caps.reference_image and not caps.mask
    assert caps.max_n == 4 and "21:9" in caps.aspect_ratios
    assert caps.max_width == caps.max_height == 1536
    assert p.models[MODEL].price_usd == Decimal("0.039")


def test_nearest_aspect_ratio_helper() -> None:
    assert nearest_aspect_ratio(("1:1", "16:9"), 100, 100, "bogus") == "1:1"
    assert nearest_aspect_ratio(("1:1", "16:9"), 1600, 1000) == "16:9"


async def test_n_runs_that_many_calls() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    result = await p.generate(ProviderRequest(prompt="x", n=3), ctx(p.http))
    assert len(result.images) == 3 and len(recorder.requests) == 3
    assert result.cost_usd == Decimal("30") * 1290 * 3 / 1_000_000
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="x", n=5), ctx(p.http))


async def test_n_keeps_images_when_some_calls_are_refused() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        check_request(request)
        calls += 1
        if calls == 1:
            return reply(200, {"candidates": [{"finishReason": "IMAGE_SAFETY"}]})
        return reply(200, image_answer())

    p = provider(handler)
    result = await p.generate(ProviderRequest(prompt="x", n=2), ctx(p.http))
    assert len(result.images) == 1
    assert "IMAGE_SAFETY" in result.metadata["failed"][0]


async def test_mask_is_not_supported() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="x", edit_image=PNG, mask=PNG), ctx(p.http))
    assert recorder.requests == []


# -- refusals ----------------------------------------------------------------------------


async def test_image_safety_finish_is_refused_with_reason_and_text() -> None:
    text = "I can't create images that depict that."
    body = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "IMAGE_SAFETY",
            }
        ]
    }
    p = provider(answer(200, body))
    with pytest.raises(Refused) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert "IMAGE_SAFETY" in info.value.message and text in info.value.message


@pytest.mark.parametrize("reason", ["PROHIBITED_CONTENT", "SAFETY", "NO_IMAGE"])
async def test_other_refusal_finish_reasons(reason: str) -> None:
    p = provider(answer(200, {"candidates": [{"finishReason": reason, "index": 0}]}))
    with pytest.raises(Refused, match=reason):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_prompt_block_reason_is_refused() -> None:
    body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": USAGE}
    p = provider(answer(200, body))
    with pytest.raises(Refused, match="PROHIBITED_CONTENT"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_text_only_stop_is_transient() -> None:
    body = {
        "candidates": [
            {"content": {"parts": [{"text": "Sure! What style?"}]}, "finishReason": "STOP"}
        ]
    }
    p = provider(answer(200, body))
    with pytest.raises(Transient, match="What style"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


# -- errors ---------------------------------------------------------------------------


async def test_429_resource_exhausted_uses_retry_delay() -> None:
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "27s"},
    ]
    body = google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota", details)
    p = provider(answer(429, body))
    with pytest.raises(ProviderRateLimited) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert info.value.retry_after == 27
    assert "exceeded your current quota" in info.value.message


async def test_429_without_retry_info_falls_back_to_header() -> None:
    body = google_error(429, "RESOURCE_EXHAUSTED", "slow down")
    p = provider(answer(429, body, {"retry-after": "4"}))
    with pytest.raises(ProviderRateLimited) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert info.value.retry_after == 4


async def test_api_key_invalid_is_auth_error_without_the_key() -> None:
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
    ]
    body = google_error(
        400,
        "INVALID_ARGUMENT",
        f"API key not valid. Please pass a valid API key. ({SECRET})",
        details,
    )
    p = provider(answer(400, body))
    with pytest.raises(ProviderAuthError) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert "API key not valid" in info.value.message
    assert_secret_absent(info.value)


async def test_permission_denied_is_auth_error() -> None:
    p = provider(answer(403, google_error(403, "PERMISSION_DENIED", "denied")))
    with pytest.raises(ProviderAuthError):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_other_400_is_invalid_request() -> None:
    body = google_error(400, "INVALID_ARGUMENT", "Unsupported aspect ratio")
    p = provider(answer(400, body))
    with pytest.raises(InvalidRequest, match="Unsupported aspect ratio"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize(("status", "name"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
async def test_5xx_is_transient(status: int, name: str) -> None:
    p = provider(answer(status, google_error(status, name, "The model is overloaded.")))
    with pytest.raises(Transient) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert info.value.retryable and name in info.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b'{"candidates": "nope"}',
        b'{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png",'
        b' "data": "%%%"}}]}}]}',
        b"[]",
    ],
)
async def test_malformed_body_is_transient(body: bytes) -> None:
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


async def test_missing_key_is_auth_error_without_calling() -> None:
    recorder = FakeServer(server)
    p = provider(recorder, api_key=None)
    with pytest.raises(ProviderAuthError):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert recorder.requests == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 503])
async def test_api_key_never_appears_in_error_messages(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["x-goog-api-key"]
        return reply(status, google_error(status, "X", f"key={key}"))

    p = provider(handler)
    with pytest.raises(ProviderError) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert_secret_absent(info.value)


# -- health ---------------------------------------------------------------------------


async def test_health_gets_the_model() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        assert request.url.path == f"/v1beta/models/{MODEL}"
        assert request.headers["x-goog-api-key"] == SECRET
        return reply(200, {"name": f"models/{MODEL}"})

    assert (await provider(handler).health()).healthy


async def test_health_failures() -> None:
    def bad_key(request: httpx.Request) -> httpx.Response:
        details = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        ]
        return reply(400, google_error(400, "INVALID_ARGUMENT", "bad", details))

    health = await provider(bad_key).health()
    assert not health.healthy and health.status == "auth_failed"
    assert not (await provider(connect_error).health()).healthy
    assert (await provider(server, api_key=None).health()).status == "not_configured"
