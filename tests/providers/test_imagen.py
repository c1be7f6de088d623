"""Imagen adapter against a fake ``:predict`` server checked per PROVIDERS.md §3."""

from __future__ import annotations

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
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.imagen import ImagenProvider
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

STANDARD = "imagen-4.0-generate-001"
FAST = "imagen-4.0-fast-generate-001"
ULTRA = "imagen-4.0-ultra-generate-001"
#: parameters the Gemini API accepts (PROVIDERS.md §3); the rest are Vertex-only
GEMINI_API_PARAMETERS = {
    "sampleCount",
    "aspectRatio",
    "sampleImageSize",
    "personGeneration",
    "safetySetting",
    "includeRaiReason",
    "includeSafetyAttributes",
    "language",
    "outputOptions",
    "guidanceScale",
}


def provider(handler: Handler, **settings: Any) -> ImagenProvider:
    values: dict[str, Any] = {"kind": "imagen", "api_key": SECRET, "base_url": "http://fake/v1beta"}
    values.update(settings)
    return ImagenProvider("imagen", ImagenProvider.settings_class(**values), client(handler))


def check_request(request: httpx.Request, model: str | None = None) -> dict[str, Any]:
    assert request.method == "POST"
    assert request.url.path.startswith("/v1beta/models/imagen-4.0-")
    assert request.url.path.endswith(":predict")
    if model is not None:
        assert request.url.path == f"/v1beta/models/{model}:predict"
    assert request.headers["x-goog-api-key"] == SECRET
    assert "authorization" not in request.headers
    body = json_body(request)
    assert set(body) == {"instances", "parameters"}
    (instance,) = body["instances"]
    assert set(instance) == {"prompt"} and isinstance(instance["prompt"], str)
    params = body["parameters"]
    assert set(params) <= GEMINI_API_PARAMETERS, set(params) - GEMINI_API_PARAMETERS
    assert isinstance(params["sampleCount"], int) and 1 <= params["sampleCount"] <= 4
    assert params.get("aspectRatio", "1:1") in {"1:1", "3:4", "4:3", "9:16", "16:9"}
    assert params.get("personGeneration", "ALLOW_ADULT") in {"DONT_ALLOW", "ALLOW_ADULT"}
    assert params.get("safetySetting", "BLOCK_LOW_AND_ABOVE") in {
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
    }
    assert isinstance(params.get("includeRaiReason", False), bool)
    if "sampleImageSize" in params:
        assert params["sampleImageSize"] in {"1K", "2K"}
        assert FAST not in request.url.path
    if "outputOptions" in params:
        assert params["outputOptions"]["mimeType"] in {"image/png", "image/jpeg"}
    return body


def predictions(
    count: int, filtered: list[str] | None = None, image: bytes = PNG
) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"bytesBase64Encoded": b64(image), "mimeType": "image/png"} for _ in range(count)
    ]
    items += [{"raiFilteredReason": reason} for reason in filtered or []]
    return {"predictions": items}


def server(request: httpx.Request) -> httpx.Response:
    body = check_request(request)
    return reply(200, predictions(body["parameters"]["sampleCount"]))


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        check_request(request)
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return reply(status, body, headers)

    return handler


def google_error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


# -- success ---------------------------------------------------------------------------


async def test_generates_n_images_in_one_call() -> None:
    recorder = FakeServer(server)
    p = provider(recorder, person_generation="ALLOW_ADULT", safety_setting="BLOCK_ONLY_HIGH")
    request = ProviderRequest(prompt="a lighthouse", model=STANDARD, n=3, width=1920, height=1080)
    result = await p.generate(request, ctx(p.http))
    assert [img.data for img in result.images] == [PNG] * 3
    assert all(img.content_type == "image/png" for img in result.images)
    assert result.cost_usd == Decimal("0.12")
    assert len(recorder.requests) == 1
    body = json.loads(recorder.requests[0].content)
    assert body["instances"] == [{"prompt": "a lighthouse"}]
    assert body["parameters"] == {
        "sampleCount": 3,
        "aspectRatio": "16:9",
        "includeRaiReason": True,
        "personGeneration": "ALLOW_ADULT",
        "safetySetting": "BLOCK_ONLY_HIGH",
        "sampleImageSize": "2K",
    }


async def test_vertex_only_parameters_are_never_sent() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    request = ProviderRequest(prompt="x", negative_prompt="blurry", seed=42, model=FAST)
    await p.generate(request, ctx(p.http))
    params = json.loads(recorder.requests[0].content)["parameters"]
    for name in ("negativePrompt", "seed", "addWatermark", "enhancePrompt", "storageUri"):
        assert name not in params


async def test_fast_model_never_asks_for_2k_and_jpeg_uses_output_options() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    request = ProviderRequest(prompt="x", model=FAST, width=2048, height=2048, format="jpeg")
    await p.generate(request, ctx(p.http))
    params = json.loads(recorder.requests[0].content)["parameters"]
    assert "sampleImageSize" not in params
    assert params["outputOptions"] == {"mimeType": "image/jpeg"}


@pytest.mark.parametrize(
    ("width", "height", "aspect", "expected"),
    [
        (1024, 1024, None, "1:1"),
        (1080, 1920, None, "9:16"),
        (1200, 900, None, "4:3"),
        (900, 1200, None, "3:4"),
        (2560, 1080, None, "16:9"),
        (1024, 1024, "2:3", "3:4"),
    ],
)
async def test_aspect_ratio_mapping(
    width: int, height: int, aspect: str | None, expected: str
) -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    request = ProviderRequest(prompt="x", width=width, height=height, aspect_ratio=aspect)
    await p.generate(request, ctx(p.http))
    assert json.loads(recorder.requests[0].content)["parameters"]["aspectRatio"] == expected


async def test_fewer_predictions_return_what_came() -> None:
    p = provider(answer(200, predictions(1, ["Your prompt may violate our policies."])))
    result = await p.generate(ProviderRequest(prompt="x", n=3, model=ULTRA), ctx(p.http))
    assert len(result.images) == 1
    assert result.cost_usd == Decimal("0.06")  # filtered images are not billed
    assert result.metadata["filtered"] == ["Your prompt may violate our policies."]


async def test_silently_dropped_images_are_noted() -> None:
    p = provider(answer(200, predictions(2)))
    result = await p.generate(ProviderRequest(prompt="x", n=4), ctx(p.http))
    assert len(result.images) == 2
    assert result.metadata["filtered"] == ["2 image(s) dropped"]


def test_prices_and_catalog() -> None:
    p = provider(server)
    assert p.price(ProviderRequest(prompt="x", model=FAST, n=2)) == Decimal("0.04")
    assert p.price(ProviderRequest(prompt="x", model=STANDARD)) == Decimal("0.04")
    assert p.price(ProviderRequest(prompt="x", model=ULTRA, n=4)) == Decimal("0.24")
    caps = p.models[STANDARD].capabilities
    assert caps.max_n == 4 and not caps.negative_prompt and not caps.seed
    assert not caps.edit and not caps.reference_image
    assert caps.max_width == caps.max_height == 2816  # 2K
    assert p.models[FAST].capabilities.max_width == 1408  # Fast has no 2K


async def test_input_images_and_large_n_are_rejected_without_calling() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="x", reference_image=JPEG), ctx(p.http))
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="x", n=5), ctx(p.http))
    assert recorder.requests == []


# -- refusals and errors ----------------------------------------------------------------


async def test_all_filtered_is_refused_with_the_reason() -> None:
    reason = "Your current safety filter threshold prohibited one or more images."
    p = provider(answer(200, predictions(0, [reason])))
    with pytest.raises(Refused) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert reason in info.value.message


@pytest.mark.parametrize("body", [{}, {"predictions": []}])
async def test_no_predictions_is_refused(body: dict[str, Any]) -> None:
    p = provider(answer(200, body))
    with pytest.raises(Refused, match="filtered"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_429_uses_retry_delay() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}]
    p = provider(answer(429, google_error(429, "RESOURCE_EXHAUSTED", "quota", details)))
    with pytest.raises(ProviderRateLimited) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert info.value.retry_after == 12.5


async def test_retired_model_404_is_invalid_request() -> None:
    message = f"models/{STANDARD} is not found for API version v1beta"
    p = provider(answer(404, google_error(404, "NOT_FOUND", message)))
    with pytest.raises(InvalidRequest, match="is not found"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_api_key_invalid_is_auth_error() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    body = google_error(400, "INVALID_ARGUMENT", f"API key not valid: {SECRET}", details)
    p = provider(answer(400, body))
    with pytest.raises(ProviderAuthError) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert_secret_absent(info.value)


async def test_5xx_is_transient() -> None:
    p = provider(answer(500, google_error(500, "INTERNAL", "Internal error encountered.")))
    with pytest.raises(Transient):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>",
        b'{"predictions": {"a": 1}}',
        b'{"predictions": [{"bytesBase64Encoded": "***"}]}',
    ],
)
async def test_malformed_body_is_transient(body: bytes) -> None:
    p = provider(answer(200, body, {"content-type": "application/json"}))
    with pytest.raises(Transient):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_hang_and_read_timeout_are_provider_timeout() -> None:
    with pytest.raises(ProviderTimeout):
        slow = provider(hang(), timeout_s=0.05)
        await slow.generate(ProviderRequest(prompt="x"), ctx(slow.http))
    with pytest.raises(ProviderTimeout):
        p = provider(read_timeout)
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_connection_error_is_transient() -> None:
    p = provider(connect_error)
    with pytest.raises(Transient):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500])
async def test_api_key_never_appears_in_error_messages(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["x-goog-api-key"]
        return reply(status, google_error(status, "X", f"bad {key}"))

    p = provider(handler)
    with pytest.raises(ProviderError) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert_secret_absent(info.value)


async def test_health_flags_a_retired_model() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        assert request.url.path == f"/v1beta/models/{FAST}"
        return reply(404, google_error(404, "NOT_FOUND", "model not found"))

    health = await provider(handler).health()
    assert not health.healthy and health.status == "degraded"
    assert "model not found" in (health.detail or "")
