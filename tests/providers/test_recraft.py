"""Recraft adapter against a fake API with plain-text errors (PROVIDERS-2.md §5 and §8)."""

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
from pixelgate.providers.recraft import RecraftProvider, RecraftSettings
from tests.providers.fakes.recraft import SVG, RecraftFake
from tests.providers.kit import PNG, SECRET, FakeServer, assert_secret_absent, json_body

BASE = "https://external.api.recraft.ai/v1"


def make(server: FakeServer, **settings: Any) -> RecraftProvider:
    values: dict[str, Any] = {"api_key": SECRET, "base_url": BASE, "timeout_s": 0.5}
    values.update(settings)
    return RecraftProvider("recraft", RecraftSettings(**values), server.client())


async def test_raster_generation_sends_style_substyle_and_costs_the_units() -> None:
    server = FakeServer(RecraftFake(credits=40))
    p = make(server)
    request = ProviderRequest(
        prompt="a fox",
        style="digital_illustration/pixel_art",
        width=1536,
        height=1024,
        negative_prompt="blur",
        seed=7,
        n=2,
    )
    result = await p.generate(request, server.context())
    assert [img.data for img in result.images] == [PNG, PNG]
    assert result.cost_usd == Decimal("0.08")  # 80 units
    sent = server.requests[0]
    assert sent.url.path == "/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert json_body(sent) == {
        "prompt": "a fox",
        "model": "recraftv3",
        "n": 2,
        "size": "1536x1024",
        "response_format": "b64_json",
        "style": "digital_illustration",
        "substyle": "pixel_art",
        "negative_prompt": "blur",
        "random_seed": 7,
    }


async def test_vector_model_returns_svg_untouched_for_the_pipeline() -> None:
    server = FakeServer(RecraftFake(credits=40))
    p = make(server)
    request = ProviderRequest(prompt="a logo", model="recraftv3_vector", style="icon", format="svg")
    result = await p.generate(request, server.context())
    image = result.images[0]
    assert image.data == SVG and image.content_type == "image/svg+xml"
    assert result.cost_usd == Decimal("0.08") and result.metadata["vector"] is True
    assert p.models["recraftv3_vector"].capabilities.output_formats == ("svg",)
    assert "svg" not in p.models["recraftv3"].capabilities.output_formats


async def test_url_mode_returns_links() -> None:
    server = FakeServer(RecraftFake())
    result = await make(server, response_format="url").generate(
        ProviderRequest(prompt="x", model="recraftv3_vector"), server.context()
    )
    assert result.images[0].url is not None and result.images[0].url.endswith(".svg")


async def test_v4_takes_a_ratio_and_no_style() -> None:
    server = FakeServer(RecraftFake())
    p = make(server)
    await p.generate(
        ProviderRequest(prompt="x", model="recraftv4_1", width=1344, height=768), server.context()
    )
    assert json_body(server.requests[0])["size"] == "16:9"
    with pytest.raises(InvalidRequest, match="V4 takes no styles"):
        await p.generate(
            ProviderRequest(prompt="x", model="recraftv4_1", style="any"), server.context()
        )


@pytest.mark.parametrize(
    "request_",
    [
        ProviderRequest(prompt="x", model="recraftv3", format="svg"),
        ProviderRequest(prompt="x", model="recraftv3_vector", style="realistic_image"),
        ProviderRequest(prompt="x", n=7),
    ],
)
async def test_requests_the_model_cannot_serve_are_refused_before_the_call(
    request_: ProviderRequest,
) -> None:
    server = FakeServer(RecraftFake())
    with pytest.raises(InvalidRequest):
        await make(server).generate(request_, server.context())
    assert server.requests == []


async def test_rate_limit_carries_retry_after() -> None:
    server = FakeServer(RecraftFake(fail="rate_limit", retry_after="5"))
    with pytest.raises(ProviderRateLimited) as caught:
        await make(server).generate(ProviderRequest(prompt="x"), server.context())
    assert caught.value.retry_after == 5


async def test_plain_text_nsfw_error_is_a_refusal() -> None:
    server = FakeServer(RecraftFake(fail="nsfw"))
    with pytest.raises(Refused, match="nsfw"):
        await make(server).generate(ProviderRequest(prompt="x"), server.context())


async def test_plain_text_401_is_an_auth_error_without_the_key() -> None:
    server = FakeServer(RecraftFake(key="other"))
    with pytest.raises(ProviderAuthError, match="request unauthorized") as caught:
        await make(server).generate(ProviderRequest(prompt="x"), server.context())
    assert_secret_absent(caught.value)


async def test_a_slow_api_times_out() -> None:
    server = FakeServer(RecraftFake(fail="hang"))
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.2).generate(ProviderRequest(prompt="x"), server.context())


async def test_health_reads_the_account() -> None:
    server = FakeServer(RecraftFake())
    assert (await make(server).health()).healthy
    assert server.requests[0].url.path == "/v1/users/me"
    assert (await make(FakeServer(RecraftFake(key="x"))).health()).status == "auth_failed"
