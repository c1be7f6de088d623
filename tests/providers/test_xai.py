"""xAI adapter against a fake images API (PROVIDERS-2.md §7 and §8)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
)
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.xai import XAIProvider, XAISettings
from tests.providers.fakes.xai import XAIFake
from tests.providers.kit import JPEG, PNG, SECRET, FakeServer, assert_secret_absent, json_body

BASE = "https://api.x.ai/v1"


def make(server: FakeServer, **settings: Any) -> XAIProvider:
    values: dict[str, Any] = {"api_key": SECRET, "base_url": BASE, "timeout_s": 0.5}
    values.update(settings)
    return XAIProvider("xai", XAISettings(**values), server.client())


async def test_generate_sends_aspect_ratio_and_resolution_and_costs_from_ticks() -> None:
    server = FakeServer(XAIFake())
    p = make(server)
    request = ProviderRequest(prompt="a cat in a tree", width=1920, height=1080, n=3)
    result = await p.generate(request, server.context())
    assert [img.data for img in result.images] == [JPEG] * 3
    assert result.images[0].content_type == "image/jpeg"
    sent = server.requests[0]
    assert sent.url.path == "/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert json_body(sent) == {
        "model": "grok-imagine-image",
        "prompt": "a cat in a tree",
        "n": 3,
        "response_format": "b64_json",
        "aspect_ratio": "16:9",
        "resolution": "2k",
    }
    assert result.cost_usd == Decimal("0.06")
    assert result.metadata["revised_prompt"] == ["r"] * 3


async def test_url_mode_returns_temporary_links_for_download() -> None:
    server = FakeServer(XAIFake())
    result = await make(server, response_format="url").generate(
        ProviderRequest(prompt="x"), server.context()
    )
    assert result.images[0].url is not None and result.images[0].data is None


async def test_edit_is_json_with_a_data_url() -> None:
    server = FakeServer(XAIFake())
    await make(server).generate(
        ProviderRequest(prompt="as a pencil sketch", edit_image=PNG), server.context()
    )
    sent = server.requests[0]
    assert sent.url.path == "/v1/images/edits"
    image = json_body(sent)["image"]
    assert image["type"] == "image_url" and image["url"].startswith("data:image/png;base64,")
    assert "aspect_ratio" not in json_body(sent)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ProviderRequest(prompt="x", style="vivid"), "style"),
        (ProviderRequest(prompt="x", options={"size": "1024x1024"}), "size"),
        (ProviderRequest(prompt="x", background="transparent"), "background"),
        (ProviderRequest(prompt="x", options={"output_compression": 50}), "output_compression"),
    ],
)
async def test_fields_xai_refuses_are_invalid_before_any_call(
    request_: ProviderRequest, field: str
) -> None:
    server = FakeServer(XAIFake())
    with pytest.raises(InvalidRequest, match=field):
        await make(server).generate(request_, server.context())
    assert server.requests == []


async def test_the_fake_refuses_size_like_xai() -> None:
    """The fake itself answers ``size`` with 400, as xAI does (guards the test above)."""
    server = FakeServer(XAIFake())
    client = server.client()
    response = await client.post(
        BASE + "/images/generations",
        json={"model": "m", "prompt": "p", "size": "1x1"},
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    assert response.status_code == 400 and "size" in response.text


async def test_quality_model_sends_quality_and_prices_by_it() -> None:
    server = FakeServer(XAIFake())
    p = make(server)
    request = ProviderRequest(prompt="x", model="grok-imagine-image-2.0", quality="low")
    assert p.price(request) == Decimal("0.04")
    await p.generate(request, server.context())
    assert json_body(server.requests[0])["quality"] == "low"


async def test_rate_limit_carries_retry_after() -> None:
    server = FakeServer(XAIFake(fail="rate_limit", retry_after="2"))
    with pytest.raises(ProviderRateLimited) as caught:
        await make(server).generate(ProviderRequest(prompt="x"), server.context())
    assert caught.value.retry_after == 2


@pytest.mark.parametrize("fail", ["blocked", "policy"])
async def test_moderation_is_a_refusal(fail: str) -> None:
    server = FakeServer(XAIFake(fail=fail))
    with pytest.raises(Refused):
        await make(server).generate(ProviderRequest(prompt="x"), server.context())


@pytest.mark.parametrize("fake", [XAIFake(key="other"), XAIFake(fail="auth")])
async def test_bad_key_is_an_auth_error_without_the_key(fake: XAIFake) -> None:
    server = FakeServer(fake)
    with pytest.raises(ProviderAuthError) as caught:
        await make(server).generate(ProviderRequest(prompt="x"), server.context())
    assert_secret_absent(caught.value)


async def test_a_slow_api_times_out() -> None:
    server = FakeServer(XAIFake(fail="hang"))
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.2).generate(ProviderRequest(prompt="x"), server.context())


async def test_health() -> None:
    assert (await make(FakeServer(XAIFake())).health()).healthy
    assert (await make(FakeServer(XAIFake(key="other"))).health()).status == "auth_failed"
    assert not (await make(FakeServer(XAIFake()), api_key=None).health()).healthy
