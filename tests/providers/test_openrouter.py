"""OpenRouter adapter against a fake of both image routes (PROVIDERS-2.md §6 and §8)."""

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
    Transient,
)
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.openrouter import OpenRouterProvider, OpenRouterSettings
from tests.providers.fakes.openrouter import OpenRouterFake
from tests.providers.kit import PNG, SECRET, FakeServer, assert_secret_absent, json_body

BASE = "https://openrouter.ai/api/v1"
GEMINI = "google/gemini-2.5-flash-image"


def make(server: FakeServer, **settings: Any) -> OpenRouterProvider:
    values: dict[str, Any] = {"api_key": SECRET, "base_url": BASE, "timeout_s": 0.5}
    values.update(settings)
    return OpenRouterProvider("openrouter", OpenRouterSettings(**values), server.client())


async def test_chat_route_sends_modalities_and_decodes_data_url_images() -> None:
    server = FakeServer(OpenRouterFake())
    p = make(server, title="pixelgate")
    request = ProviderRequest(prompt="a sunset", width=1344, height=768)
    result = await p.generate(request, server.context())
    assert result.images[0].data == PNG and result.images[0].content_type == "image/png"
    assert result.cost_usd == Decimal("0.039")  # usage.cost
    assert result.provider_job_id == "gen-123" and result.metadata["route"] == "chat"
    sent = server.requests[0]
    assert sent.url.path == "/api/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.headers["x-title"] == "pixelgate"
    assert json_body(sent) == {
        "model": GEMINI,
        "messages": [{"role": "user", "content": "a sunset"}],
        "modalities": ["image", "text"],
        "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
    }


async def test_image_only_models_ask_for_image_modality_only() -> None:
    server = FakeServer(OpenRouterFake())
    await make(server).generate(
        ProviderRequest(prompt="x", model="black-forest-labs/flux.2-pro"), server.context()
    )
    assert json_body(server.requests[0])["modalities"] == ["image"]


async def test_reference_image_goes_as_a_data_url_part() -> None:
    server = FakeServer(OpenRouterFake())
    await make(server).generate(
        ProviderRequest(prompt="like this", reference_image=PNG), server.context()
    )
    content = json_body(server.requests[0])["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "like this"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")


async def test_configured_models_take_the_images_route() -> None:
    server = FakeServer(OpenRouterFake())
    p = make(server, routes={"openai/gpt-image-1": "images"})
    request = ProviderRequest(prompt="x", model="openai/gpt-image-1", n=2, format="webp")
    result = await p.generate(request, server.context())
    sent = server.requests[0]
    assert sent.url.path == "/api/v1/images"
    assert json_body(sent) == {
        "model": "openai/gpt-image-1",
        "prompt": "x",
        "n": 2,
        "resolution": "1K",
        "aspect_ratio": "1:1",
        "output_format": "webp",
    }
    assert [img.data for img in result.images] == [PNG, PNG]
    assert result.cost_usd == Decimal("0.1")
    assert p.models["openai/gpt-image-1"].capabilities.max_n == 10
    assert p.models[GEMINI].capabilities.max_n == 1


async def test_default_route_and_extra_models_are_configurable() -> None:
    server = FakeServer(OpenRouterFake())
    p = make(server, default_route="images", extra_models={"acme/painter": "0.02"})
    assert p.models["acme/painter"].price_usd == Decimal("0.02")
    await p.generate(ProviderRequest(prompt="x", model="acme/painter"), server.context())
    assert server.requests[0].url.path == "/api/v1/images"


async def test_n_above_a_single_image_model_is_refused_before_the_call() -> None:
    server = FakeServer(OpenRouterFake())
    with pytest.raises(InvalidRequest):
        await make(server).generate(ProviderRequest(prompt="x", n=2), server.context())
    assert server.requests == []


async def test_a_reply_in_words_only_is_a_refusal() -> None:
    server = FakeServer(OpenRouterFake(text_only={GEMINI}))
    with pytest.raises(Refused, match="can't help"):
        await make(server).generate(ProviderRequest(prompt="x"), server.context())


async def test_moderation_403_with_reasons_is_a_refusal() -> None:
    server = FakeServer(OpenRouterFake(fail="moderation"))
    with pytest.raises(Refused, match="sexual"):
        await make(server).generate(ProviderRequest(prompt="x"), server.context())


@pytest.mark.parametrize("fail", ["rate_limit", "no_route"])
async def test_429_and_503_carry_retry_after(fail: str) -> None:
    server = FakeServer(OpenRouterFake(fail=fail, retry_after="3"))
    expected = ProviderRateLimited if fail == "rate_limit" else Transient
    with pytest.raises(expected) as caught:
        await make(server).generate(ProviderRequest(prompt="x"), server.context())
    assert caught.value.retry_after == 3


async def test_no_credits_takes_the_provider_out_like_an_auth_error() -> None:
    server = FakeServer(OpenRouterFake(fail="no_credits"))
    with pytest.raises(ProviderAuthError, match="Insufficient credits"):
        await make(server).generate(ProviderRequest(prompt="x"), server.context())


async def test_bad_key_is_an_auth_error_without_the_key() -> None:
    server = FakeServer(OpenRouterFake(key="other"))
    with pytest.raises(ProviderAuthError) as caught:
        await make(server).generate(ProviderRequest(prompt="x"), server.context())
    assert_secret_absent(caught.value)


async def test_a_slow_route_times_out() -> None:
    server = FakeServer(OpenRouterFake(fail="hang"))
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.2).generate(ProviderRequest(prompt="x"), server.context())


async def test_health_reads_the_key_record() -> None:
    server = FakeServer(OpenRouterFake())
    assert (await make(server).health()).healthy
    assert server.requests[0].url.path == "/api/v1/key"
    assert (await make(FakeServer(OpenRouterFake(key="x"))).health()).status == "auth_failed"
