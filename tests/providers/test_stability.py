"""Stability adapter against a fake v2beta server checked per PROVIDERS.md §4."""

from __future__ import annotations

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
from pixelgate.providers.stability import StabilityProvider
from tests.providers.kit import (
    JPEG,
    PNG,
    SECRET,
    FakeServer,
    Handler,
    Multipart,
    assert_secret_absent,
    b64,
    client,
    connect_error,
    ctx,
    hang,
    multipart,
    read_timeout,
    reply,
)

RATIOS = {"16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"}
FIELDS = {
    "core": {"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format", "style_preset"},
    "ultra": {
        "prompt",
        "negative_prompt",
        "aspect_ratio",
        "seed",
        "output_format",
        "style_preset",
        "image",
        "strength",
    },
    "sd3": {
        "prompt",
        "negative_prompt",
        "aspect_ratio",
        "seed",
        "output_format",
        "style_preset",
        "image",
        "strength",
        "mode",
        "model",
        "cfg_scale",
    },
}


def provider(handler: Handler, **settings: Any) -> StabilityProvider:
    values: dict[str, Any] = {"kind": "stability", "api_key": SECRET, "base_url": "http://fake"}
    values.update(settings)
    return StabilityProvider(
        "stability", StabilityProvider.settings_class(**values), client(handler)
    )


def check_request(request: httpx.Request) -> tuple[str, Multipart]:
    assert request.method == "POST"
    prefix = "/v2beta/stable-image/generate/"
    assert request.url.path.startswith(prefix)
    endpoint = request.url.path.removeprefix(prefix)
    assert endpoint in FIELDS
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["accept"] in ("image/*", "application/json")
    form = multipart(request)  # always multipart, even without a file
    text_fields = {p.name for p in form.parts if p.filename is None}
    assert text_fields <= FIELDS[endpoint], text_fields - FIELDS[endpoint]
    prompt = form.field("prompt")
    assert 1 <= len(prompt) <= 10000
    has_image = bool(form.files("image"))
    if not has_image:
        (dummy,) = form.files("none")  # Stability's own example: files={"none": ''}
        assert dummy.data == b""
    if "aspect_ratio" in text_fields:
        assert form.field("aspect_ratio") in RATIOS
    if "seed" in text_fields:
        assert 0 <= int(form.field("seed")) <= 4294967294
    formats = {"jpeg", "png"} if endpoint == "sd3" else {"jpeg", "png", "webp"}
    assert form.field("output_format") in formats
    if has_image or "strength" in text_fields:
        assert endpoint in ("ultra", "sd3")
        assert has_image and 0 <= float(form.field("strength")) <= 1
    if endpoint == "sd3":
        assert form.field("model") in {"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium"}
        if has_image:
            assert form.field("mode") == "image-to-image"
            assert "aspect_ratio" not in text_fields
    return endpoint, form


def image_response(form: Multipart, finish: str = "SUCCESS") -> httpx.Response:
    fmt = form.field("output_format")
    seed = form.field("seed") if "seed" in form.names() else "1234"
    return httpx.Response(
        200,
        content=PNG if fmt == "png" else JPEG,
        headers={
            "content-type": f"image/{fmt}",
            "finish-reason": finish,
            "seed": seed,
            "x-request-id": "abc",
        },
    )


def server(request: httpx.Request) -> httpx.Response:
    _, form = check_request(request)
    return image_response(form)


def stability_error(name: str, *errors: str) -> dict[str, Any]:
    return {"id": "7d8c2f1e-0000-4000-8000-000000000000", "name": name, "errors": list(errors)}


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        check_request(request)
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return reply(status, body, headers)

    return handler


# -- success ---------------------------------------------------------------------------


async def test_core_returns_raw_bytes_with_seed_header() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    request = ProviderRequest(
        prompt="a fox",
        model="core",
        negative_prompt="blurry",
        seed=42,
        width=1920,
        height=1080,
        style="anime",
    )
    result = await p.generate(request, ctx(p.http))
    (image,) = result.images
    assert image.data == PNG and image.content_type == "image/png" and image.seed == 42
    assert result.cost_usd == Decimal("0.03")
    form = multipart(recorder.requests[0])
    assert form.field("prompt") == "a fox"
    assert form.field("negative_prompt") == "blurry"
    assert form.field("seed") == "42"
    assert form.field("aspect_ratio") == "16:9"
    assert form.field("output_format") == "png"
    assert form.field("style_preset") == "anime"
    assert "model" not in form.names()
    assert recorder.requests[0].headers["accept"] == "image/*"


async def test_json_variant_is_accepted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        check_request(request)
        body = {"image": b64(JPEG), "finish_reason": "SUCCESS", "seed": 7}
        return httpx.Response(
            200, json=body, headers={"content-type": "application/json; type=image/jpeg"}
        )

    p = provider(handler)
    result = await p.generate(ProviderRequest(prompt="x", format="jpeg"), ctx(p.http))
    assert result.images[0].data == JPEG
    assert result.images[0].seed == 7 and result.images[0].content_type == "image/jpeg"


async def test_sd3_sends_model_and_falls_back_from_webp() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    request = ProviderRequest(prompt="x", model="sd3.5-large-turbo", format="webp")
    result = await p.generate(request, ctx(p.http))
    assert recorder.requests[0].url.path == "/v2beta/stable-image/generate/sd3"
    form = multipart(recorder.requests[0])
    assert form.field("model") == "sd3.5-large-turbo"
    assert form.field("output_format") == "png"
    assert result.images[0].content_type == "image/png"
    assert result.cost_usd == Decimal("0.04")


async def test_sd3_reference_image_is_image_to_image() -> None:
    recorder = FakeServer(server)
    p = provider(recorder, image_strength=0.35)
    request = ProviderRequest(prompt="x", model="sd3.5-medium", reference_image=JPEG)
    await p.generate(request, ctx(p.http))
    form = multipart(recorder.requests[0])
    (image,) = form.files("image")
    assert image.data == JPEG and image.content_type == "image/jpeg"
    assert form.field("mode") == "image-to-image"
    assert form.field("strength") == "0.35"
    assert "none" not in form.names() and "aspect_ratio" not in form.names()


async def test_ultra_reference_image_with_strength_option() -> None:
    recorder = FakeServer(server)
    p = provider(recorder, client_id="pixelgate")
    request = ProviderRequest(
        prompt="x", model="ultra", reference_image=PNG, options={"strength": 0.8}
    )
    result = await p.generate(request, ctx(p.http))
    assert recorder.requests[0].url.path == "/v2beta/stable-image/generate/ultra"
    assert recorder.requests[0].headers["stability-client-id"] == "pixelgate"
    form = multipart(recorder.requests[0])
    assert form.field("strength") == "0.8"
    assert result.cost_usd == Decimal("0.08")


async def test_bad_strength_and_unsupported_inputs_are_rejected() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    bad = ProviderRequest(prompt="x", model="ultra", reference_image=PNG, options={"strength": 2})
    with pytest.raises(InvalidRequest):
        await p.generate(bad, ctx(p.http))
    with pytest.raises(InvalidRequest):
        await p.generate(
            ProviderRequest(prompt="x", model="core", reference_image=PNG), ctx(p.http)
        )
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="x", edit_image=PNG), ctx(p.http))
    with pytest.raises(InvalidRequest):
        await p.generate(ProviderRequest(prompt="x", n=5), ctx(p.http))
    assert recorder.requests == []


async def test_n_runs_calls_with_consecutive_seeds() -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    result = await p.generate(ProviderRequest(prompt="x", n=3, seed=10), ctx(p.http))
    seeds = sorted(int(multipart(r).field("seed")) for r in recorder.requests)
    assert seeds == [10, 11, 12]
    assert sorted(img.seed or 0 for img in result.images) == [10, 11, 12]
    assert result.cost_usd == Decimal("0.09")


async def test_n_keeps_images_when_one_call_fails() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        _, form = check_request(request)
        calls += 1
        if calls == 2:
            return reply(500, stability_error("internal_error", "boom"))
        return image_response(form)

    p = provider(handler)
    result = await p.generate(ProviderRequest(prompt="x", n=2), ctx(p.http))
    assert len(result.images) == 1 and result.cost_usd == Decimal("0.03")
    assert "boom" in result.metadata["failed"][0]


@pytest.mark.parametrize(
    ("width", "height", "aspect", "expected"),
    [
        (1024, 1024, None, "1:1"),
        (1080, 1920, None, "9:16"),
        (2560, 1080, None, "21:9"),
        (1080, 2560, None, "9:21"),
        (1024, 1280, None, "4:5"),
        (1536, 1024, None, "3:2"),
        (100, 100, "5:4", "5:4"),
        (100, 100, "4:3", "5:4"),
    ],
)
async def test_aspect_ratio_mapping(
    width: int, height: int, aspect: str | None, expected: str
) -> None:
    recorder = FakeServer(server)
    p = provider(recorder)
    request = ProviderRequest(prompt="x", width=width, height=height, aspect_ratio=aspect)
    await p.generate(request, ctx(p.http))
    assert multipart(recorder.requests[0]).field("aspect_ratio") == expected


@pytest.mark.parametrize(
    ("model", "n", "expected"),
    [
        ("core", 1, "0.03"),
        ("core", 4, "0.12"),
        ("ultra", 1, "0.08"),
        ("sd3.5-large", 2, "0.13"),
        ("sd3.5-large-turbo", 1, "0.04"),
        ("sd3.5-medium", 1, "0.035"),
    ],
)
def test_prices(model: str, n: int, expected: str) -> None:
    assert provider(server).price(ProviderRequest(prompt="x", model=model, n=n)) == Decimal(
        expected
    )


def test_catalog() -> None:
    models = provider(server).models
    assert set(models) == {"core", "ultra", "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium"}
    assert models["core"].capabilities.negative_prompt and models["core"].capabilities.seed
    assert not models["core"].capabilities.reference_image
    assert models["ultra"].capabilities.reference_image
    assert models["sd3.5-large"].capabilities.output_formats == ("png", "jpeg")
    assert models["ultra"].capabilities.max_width == 1536  # about 1 MP outputs


# -- refusals and errors ----------------------------------------------------------------


async def test_content_filtered_image_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        _, form = check_request(request)
        return image_response(form, finish="CONTENT_FILTERED")

    p = provider(handler)
    with pytest.raises(Refused, match="CONTENT_FILTERED"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_content_filtered_json_is_refused() -> None:
    body = {"image": b64(PNG), "finish_reason": "CONTENT_FILTERED", "seed": 1}
    p = provider(answer(200, body))
    with pytest.raises(Refused):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_content_moderation_403_is_refused_with_reason() -> None:
    reason = "Your request was flagged by our content moderation system"
    p = provider(answer(403, stability_error("content_moderation", reason)))
    with pytest.raises(Refused) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert reason in info.value.message and info.value.status_code == 403


async def test_other_403_is_auth_error() -> None:
    p = provider(answer(403, stability_error("forbidden", "key disabled")))
    with pytest.raises(ProviderAuthError):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize(("headers", "expected"), [({}, 60.0), ({"retry-after": "5"}, 5.0)])
async def test_429_is_rate_limited_with_lockout_default(
    headers: dict[str, str], expected: float
) -> None:
    body = stability_error("rate_limit_exceeded", "You have exceeded the rate limit")
    p = provider(answer(429, body, headers))
    with pytest.raises(ProviderRateLimited) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert info.value.retry_after == expected


async def test_bad_key_is_auth_error_without_the_key() -> None:
    body = stability_error("unauthorized", f"Incorrect API key provided: {SECRET}")
    p = provider(answer(401, body))
    with pytest.raises(ProviderAuthError) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert "unauthorized" in info.value.message
    assert_secret_absent(info.value)


async def test_out_of_credits_is_auth_error() -> None:
    p = provider(answer(402, stability_error("payment_required", "lack sufficient credits")))
    with pytest.raises(ProviderAuthError, match="credits"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_parameter_errors_are_invalid_request(status: int) -> None:
    p = provider(answer(status, stability_error("bad_request", "prompt: is required")))
    with pytest.raises(InvalidRequest, match="prompt: is required"):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_transient(status: int) -> None:
    p = provider(answer(status, stability_error("internal_error", "An unexpected error")))
    with pytest.raises(Transient):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"image": "@@@", "finish_reason": "SUCCESS"}', "application/json"),
        (b'{"finish_reason": "SUCCESS"}', "application/json"),
        (b"<html>oops</html>", "text/html"),
        (b"", "image/png"),
    ],
)
async def test_malformed_body_is_transient(body: bytes, content_type: str) -> None:
    p = provider(answer(200, body, {"content-type": content_type}))
    with pytest.raises(Transient):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_hang_and_read_timeout_are_provider_timeout() -> None:
    slow = provider(hang(), timeout_s=0.05)
    with pytest.raises(ProviderTimeout):
        await slow.generate(ProviderRequest(prompt="x"), ctx(slow.http))
    p = provider(read_timeout)
    with pytest.raises(ProviderTimeout):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


async def test_connection_error_is_transient() -> None:
    p = provider(connect_error)
    with pytest.raises(Transient):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))


@pytest.mark.parametrize("status", [400, 401, 402, 403, 413, 429, 500])
async def test_api_key_never_appears_in_error_messages(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"]
        return reply(status, stability_error("content_moderation", f"echo {key}"))

    p = provider(handler)
    with pytest.raises(ProviderError) as info:
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert_secret_absent(info.value)


async def test_missing_key_fails_before_calling() -> None:
    recorder = FakeServer(server)
    p = provider(recorder, api_key=None)
    with pytest.raises(ProviderAuthError):
        await p.generate(ProviderRequest(prompt="x"), ctx(p.http))
    assert recorder.requests == []
    assert (await p.health()).status == "not_configured"
    assert (await provider(server).health()).healthy
