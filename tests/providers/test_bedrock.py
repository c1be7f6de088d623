"""Bedrock adapter against a fake runtime that recomputes each SigV4 signature with botocore."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from PIL import Image

from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
)
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.bedrock import NOVA, SD35, TITAN, BedrockProvider, BedrockSettings
from tests.fakes import FakeJobContext, png_bytes
from tests.providers.fakes.bedrock import (
    ACCESS_KEY,
    BEDROCK_API_KEY,
    SECRET_KEY,
    SESSION_TOKEN,
    FakeBedrock,
    bedrock_error,
)
from tests.providers.kit import PNG, b64, client, hang

ULTRA = "stability.stable-image-ultra-v1:1"


def make(fake: Any, **extra: Any) -> BedrockProvider:
    values: dict[str, Any] = {
        "kind": "bedrock",
        "region": "us-east-1",
        "base_url": "https://bedrock-runtime.us-east-1.amazonaws.com",
        "timeout_s": 5.0,
        **extra,
    }
    return BedrockProvider("bedrock", BedrockSettings(**values), client(fake))


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials through the standard chain's environment provider."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


def ctx() -> FakeJobContext:
    return FakeJobContext(http=httpx.AsyncClient())


def sent(fake: FakeBedrock, index: int = 0) -> dict[str, Any]:
    body = json.loads(fake.requests[index].content)
    assert isinstance(body, dict)
    return body


async def test_nova_text_to_image_is_signed_with_credentials_from_the_environment(
    aws_env: None,
) -> None:
    fake = FakeBedrock()
    provider = make(fake)
    result = await provider.generate(
        ProviderRequest(
            prompt="a steampunk robot", n=2, width=1000, height=700, seed=12, style="photorealism"
        ),
        ctx(),
    )
    assert [i.data for i in result.images] == [PNG, PNG]
    assert result.cost_usd == 2 * provider.models[NOVA].price_usd
    request = fake.requests[0]
    assert request.url.raw_path == b"/model/amazon.nova-canvas-v1%3A0/invoke"
    assert request.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert fake.auth_seen[0].count("/us-east-1/bedrock/aws4_request") == 1
    body = sent(fake)
    assert body["taskType"] == "TEXT_IMAGE"
    assert body["textToImageParams"] == {"text": "a steampunk robot", "style": "PHOTOREALISM"}
    config = body["imageGenerationConfig"]
    assert config == {
        "numberOfImages": 2,
        "width": 992,
        "height": 704,
        "quality": "standard",
        "seed": 12,
    }


async def test_a_tampered_body_fails_the_signature_check(aws_env: None) -> None:
    """The fake really recomputes the signature: a wrong secret is caught."""
    fake = FakeBedrock(secret_key="not-the-secret")
    with pytest.raises(ProviderAuthError, match="InvalidSignatureException"):
        await make(fake).generate(ProviderRequest(prompt="x"), ctx())


async def test_explicit_temporary_credentials_send_the_session_token() -> None:
    fake = FakeBedrock(region="eu-west-1")
    provider = make(
        fake,
        region="eu-west-1",
        base_url="https://bedrock-runtime.eu-west-1.amazonaws.com",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=SESSION_TOKEN,
    )
    await provider.generate(ProviderRequest(prompt="x"), ctx())
    assert fake.requests[0].headers["x-amz-security-token"] == SESSION_TOKEN


async def test_the_region_decides_the_default_endpoint(aws_env: None) -> None:
    fake = FakeBedrock(region="us-west-2")
    await make(fake, region="us-west-2", base_url=None).generate(
        ProviderRequest(prompt="x", model=ULTRA), ctx()
    )
    assert fake.requests[0].url.host == "bedrock-runtime.us-west-2.amazonaws.com"


async def test_a_bedrock_api_key_is_sent_as_a_bearer_token() -> None:
    fake = FakeBedrock()
    await make(fake, api_key=BEDROCK_API_KEY).generate(ProviderRequest(prompt="x"), ctx())
    assert fake.auth_seen == [f"Bearer {BEDROCK_API_KEY}"]
    assert "x-amz-date" not in fake.requests[0].headers


async def test_no_credentials_anywhere_is_an_auth_error() -> None:
    fake = FakeBedrock()
    with pytest.raises(ProviderAuthError, match="no AWS credentials"):
        await make(fake).generate(ProviderRequest(prompt="x"), ctx())
    assert fake.requests == []


async def test_unknown_access_key_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    with pytest.raises(ProviderAuthError, match="UnrecognizedClientException"):
        await make(FakeBedrock()).generate(ProviderRequest(prompt="x"), ctx())


async def test_nova_inpainting_turns_the_mask_into_black_and_white(aws_env: None) -> None:
    mask = Image.new("RGBA", (32, 24), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 16, 24))  # left half transparent: the area to change
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    fake = FakeBedrock()
    image = png_bytes()
    await make(fake).generate(
        ProviderRequest(prompt="a hat", edit_image=image, mask=buf.getvalue()), ctx()
    )
    body = sent(fake)
    assert body["taskType"] == "INPAINTING"
    params = body["inPaintingParams"]
    assert params["image"] == b64(image) and params["text"] == "a hat"
    nova_mask = Image.open(io.BytesIO(__import__("base64").b64decode(params["maskImage"])))
    assert nova_mask.mode == "RGB"
    assert nova_mask.getpixel((2, 2)) == (0, 0, 0)  # black: change
    assert nova_mask.getpixel((30, 2)) == (255, 255, 255)  # white: keep


async def test_nova_variation_outpainting_and_background_removal(aws_env: None) -> None:
    fake = FakeBedrock()
    provider = make(fake)
    image = png_bytes()
    await provider.generate(ProviderRequest(prompt="like this", reference_image=image), ctx())
    await provider.generate(
        ProviderRequest(
            prompt="a beach",
            edit_image=image,
            options={"task": "outpainting", "mask_prompt": "the dog"},
        ),
        ctx(),
    )
    await provider.generate(
        ProviderRequest(prompt="-", edit_image=image, options={"task": "BACKGROUND_REMOVAL"}), ctx()
    )
    variation, outpainting, removal = (sent(fake, i) for i in range(3))
    assert variation["taskType"] == "IMAGE_VARIATION"
    assert variation["imageVariationParams"]["images"] == [b64(image)]
    assert outpainting["taskType"] == "OUTPAINTING"
    assert outpainting["outPaintingParams"]["maskPrompt"] == "the dog"
    assert removal == {
        "taskType": "BACKGROUND_REMOVAL",
        "backgroundRemovalParams": {"image": b64(image)},
    }


async def test_a_task_without_what_it_needs_is_refused_before_the_call(aws_env: None) -> None:
    fake = FakeBedrock()
    with pytest.raises(InvalidRequest, match="mask"):
        await make(fake).generate(
            ProviderRequest(prompt="x", edit_image=PNG, options={"task": "inpainting"}), ctx()
        )
    with pytest.raises(InvalidRequest, match=r"options\.task"):
        await make(fake).generate(ProviderRequest(prompt="x", options={"task": "dance"}), ctx())
    assert fake.requests == []


async def test_titan_snaps_to_its_size_list(aws_env: None) -> None:
    fake = FakeBedrock()
    await make(fake).generate(
        ProviderRequest(prompt="x", model=TITAN, width=1920, height=1080, style="photorealism"),
        ctx(),
    )
    body = sent(fake)
    assert fake.requests[0].url.raw_path == b"/model/amazon.titan-image-generator-v2%3A0/invoke"
    assert (body["imageGenerationConfig"]["width"], body["imageGenerationConfig"]["height"]) == (
        1408,
        768,
    )
    assert "style" not in body["textToImageParams"]


async def test_stability_sd35_image_to_image(aws_env: None) -> None:
    fake = FakeBedrock()
    result = await make(fake).generate(
        ProviderRequest(
            prompt="oil painting", model=SD35, edit_image=PNG, seed=5, negative_prompt="blur"
        ),
        ctx(),
    )
    assert result.images[0].seed == 7
    assert sent(fake) == {
        "prompt": "oil painting",
        "mode": "image-to-image",
        "image": b64(PNG),
        "strength": 0.7,
        "negative_prompt": "blur",
        "seed": 5,
    }


async def test_throttling_is_rate_limited_with_retry_after(aws_env: None) -> None:
    fake = FakeBedrock(
        answer=lambda r, i: bedrock_error(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
            {"Retry-After": "9"},
        )
    )
    with pytest.raises(ProviderRateLimited) as caught:
        await make(fake).generate(ProviderRequest(prompt="x"), ctx())
    assert caught.value.retry_after == 9
    assert "ThrottlingException" in caught.value.message


async def test_validation_errors_are_invalid_requests(aws_env: None) -> None:
    fake = FakeBedrock(
        answer=lambda r, i: bedrock_error(
            400, "ValidationException", "Malformed input request: #: extraneous key [foo]"
        )
    )
    with pytest.raises(InvalidRequest, match="Malformed input request"):
        await make(fake).generate(ProviderRequest(prompt="x"), ctx())


@pytest.mark.parametrize(
    "message",
    [
        "This request has been blocked by our content filters.",
        "This request has been blocked by our content filters because the generated image(s) "
        "may conflict with our AUP or AWS Responsible AI Policy.",
    ],
)
async def test_content_filter_blocks_are_refusals(aws_env: None, message: str) -> None:
    fake = FakeBedrock(answer=lambda r, i: bedrock_error(400, "ValidationException", message))
    with pytest.raises(Refused):
        await make(fake).generate(ProviderRequest(prompt="x"), ctx())


async def test_stability_filtering_is_a_200_refusal(aws_env: None) -> None:
    filtered = {"seeds": [3], "finish_reasons": ["Filter reason: prompt"], "images": []}
    fake = FakeBedrock(answer=lambda r, i: httpx.Response(200, json=filtered))
    with pytest.raises(Refused, match="Filter reason: prompt"):
        await make(fake).generate(ProviderRequest(prompt="x", model=ULTRA), ctx())


async def test_a_slow_model_times_out(aws_env: None) -> None:
    settings = BedrockSettings(kind="bedrock", region="us-east-1", timeout_s=0.3)
    provider = BedrockProvider("bedrock", settings, client(hang()))
    with pytest.raises(ProviderTimeout):
        await provider.generate(ProviderRequest(prompt="x"), ctx())


async def test_model_timeout_exception_is_a_timeout(aws_env: None) -> None:
    fake = FakeBedrock(
        answer=lambda r, i: bedrock_error(408, "ModelTimeoutException", "Model timed out")
    )
    with pytest.raises(ProviderTimeout):
        await make(fake).generate(ProviderRequest(prompt="x"), ctx())


async def test_health_reads_the_foundation_model(aws_env: None) -> None:
    fake = FakeBedrock()
    health = await make(fake).health()
    assert health.healthy, health
    assert fake.requests[0].url.raw_path == b"/foundation-models/amazon.nova-canvas-v1%3A0"
    assert fake.requests[0].method == "GET"


async def test_health_without_credentials_reports_auth_failed() -> None:
    assert (await make(FakeBedrock()).health()).status == "auth_failed"
    unconfigured = BedrockProvider("bedrock", BedrockSettings(kind="bedrock"), httpx.AsyncClient())
    assert (await unconfigured.health()).status == "not_configured"


def test_nova_prices_follow_quality_and_size() -> None:
    provider = make(FakeBedrock(), quality="premium")
    small = provider.price(ProviderRequest(prompt="x", width=1024, height=1024))
    large = provider.price(ProviderRequest(prompt="x", width=2048, height=2048, n=2))
    assert (small, large) == (Decimal("0.06"), Decimal("0.16"))


def test_the_api_key_comes_from_aws_bearer_token_bedrock(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any
) -> None:
    from pixelgate.providers.registry import build_providers

    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", BEDROCK_API_KEY)
    settings = make_settings(providers={"bedrock": {"kind": "bedrock", "region": "us-east-1"}})
    provider = build_providers(settings, httpx.AsyncClient()).get("bedrock")
    assert provider.settings.api_key is not None
    assert provider.settings.api_key.get_secret_value() == BEDROCK_API_KEY
