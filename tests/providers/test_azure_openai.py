"""Azure OpenAI adapter against a fake resource (PROVIDERS-2.md §1 and §8)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from pixelgate.errors import ProviderAuthError, ProviderRateLimited, ProviderTimeout, Refused
from pixelgate.providers.azure_openai import AzureOpenAIProvider, AzureOpenAISettings
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.registry import load_kind
from tests.providers.fakes.azure import AzureFake
from tests.providers.kit import PNG, SECRET, FakeServer, assert_secret_absent, json_body, multipart

BASE = "https://myres.openai.azure.com"
VERSION = "2025-04-01-preview"


def make(server: FakeServer, **settings: Any) -> AzureOpenAIProvider:
    values: dict[str, Any] = {
        "api_key": SECRET,
        "base_url": BASE,
        "deployments": {"gpt-image-1": "img1"},
        "api_version": VERSION,
        "timeout_s": 0.5,
    }
    values.update(settings)
    return AzureOpenAIProvider("azure", AzureOpenAISettings(**values), server.client())


async def test_generate_on_the_deployment_route_with_api_version_and_api_key() -> None:
    server = FakeServer(AzureFake())
    p = make(server)
    result = await p.generate(ProviderRequest(prompt="an umbrella", n=2), server.context())
    assert [img.data for img in result.images] == [PNG, PNG]
    sent = server.requests[0]
    assert sent.url.path == "/openai/deployments/img1/images/generations"
    assert sent.url.params["api-version"] == VERSION
    assert sent.headers["api-key"] == SECRET and "authorization" not in sent.headers
    assert "model" not in json_body(sent)  # the deployment decides
    assert result.cost_usd == Decimal("40") * 4160 / 1_000_000


async def test_v1_route_names_the_deployment_as_model_and_needs_no_api_version() -> None:
    server = FakeServer(AzureFake())
    p = make(server, api_version=None)
    await p.generate(ProviderRequest(prompt="x"), server.context())
    sent = server.requests[0]
    assert sent.url.path == "/openai/v1/images/generations"
    assert "api-version" not in sent.url.params
    assert json_body(sent)["model"] == "img1"


async def test_without_deployments_each_model_is_its_own_deployment() -> None:
    server = FakeServer(AzureFake(deployments={"dall-e-3": "dall-e-3"}))
    p = make(server, deployments={})
    assert set(p.models) == {"gpt-image-1", "gpt-image-1-mini", "dall-e-3"}
    result = await p.generate(ProviderRequest(prompt="x", model="dall-e-3"), server.context())
    assert server.requests[0].url.path == "/openai/deployments/dall-e-3/images/generations"
    assert result.images[0].data == PNG


async def test_dalle3_sas_url_is_returned_for_download() -> None:
    server = FakeServer(AzureFake(deployments={"d3": "dall-e-3"}))
    p = make(server, deployments={"dall-e-3": "d3"}, response_format="url")
    result = await p.generate(ProviderRequest(prompt="x", model="dall-e-3"), server.context())
    assert result.images[0].url is not None and "se=" in result.images[0].url
    assert result.metadata["revised_prompt"] == ["a revised prompt"]


async def test_edit_goes_multipart_to_the_deployment_edits_route() -> None:
    server = FakeServer(AzureFake())
    p = make(server)
    request = ProviderRequest(prompt="make it blue", edit_image=PNG, mask=PNG)
    result = await p.generate(request, server.context())
    sent = server.requests[0]
    assert sent.url.path == "/openai/deployments/img1/images/edits"
    form = multipart(sent)
    assert form.part("image[]").data == PNG and form.part("mask").data == PNG
    assert "model" not in form.names()
    assert result.images[0].data == PNG


async def test_webp_is_asked_as_png_since_azure_has_no_webp() -> None:
    server = FakeServer(AzureFake())
    p = make(server)
    await p.generate(ProviderRequest(prompt="x", format="webp"), server.context())
    assert json_body(server.requests[0])["output_format"] == "png"
    assert p.models["gpt-image-1"].capabilities.output_formats == ("png", "jpeg")


async def test_rate_limit_carries_retry_after() -> None:
    server = FakeServer(AzureFake(fail="rate_limit", retry_after="7"))
    with pytest.raises(ProviderRateLimited) as caught:
        await make(server).generate(ProviderRequest(prompt="x"), server.context())
    assert caught.value.retry_after == 7


@pytest.mark.parametrize("fail", ["content_filter", "policy"])
async def test_content_filter_bodies_are_refusals(fail: str) -> None:
    server = FakeServer(AzureFake(fail=fail))
    with pytest.raises(Refused) as caught:
        await make(server).generate(ProviderRequest(prompt="x"), server.context())
    assert "safety system" in caught.value.message


async def test_wrong_key_is_an_auth_error_without_the_key() -> None:
    server = FakeServer(AzureFake(key="another-key"))
    with pytest.raises(ProviderAuthError) as caught:
        await make(server).generate(ProviderRequest(prompt="x"), server.context())
    assert_secret_absent(caught.value)


async def test_a_slow_resource_times_out() -> None:
    server = FakeServer(AzureFake(fail="hang"))
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.2).generate(ProviderRequest(prompt="x"), server.context())


@dataclass
class _Token:
    token: str
    expires_on: int


class FakeCredential:
    """azure-core's AsyncTokenCredential: hands out numbered tokens with a lifetime."""

    def __init__(self, lifetime_s: int = 3600) -> None:
        self.lifetime_s = lifetime_s
        self.calls: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> _Token:
        self.calls.append(scopes)
        return _Token(f"entra-{len(self.calls)}", int(time.time()) + self.lifetime_s)


async def test_entra_id_sends_a_cached_bearer_token() -> None:
    server = FakeServer(AzureFake(token="entra-1"))
    p = make(server, api_key=None, entra_id=True)
    assert p.configured
    p.credential = credential = FakeCredential()
    for _ in range(2):
        await p.generate(ProviderRequest(prompt="x"), server.context())
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer entra-1"] * 2
    assert "api-key" not in server.requests[0].headers
    assert credential.calls == [("https://cognitiveservices.azure.com/.default",)]


async def test_entra_token_is_refreshed_before_it_expires() -> None:
    server = FakeServer(AzureFake(token="entra-2"))
    p = make(server, api_key=None, entra_id=True)
    p.credential = credential = FakeCredential(lifetime_s=60)  # inside the refresh margin
    with pytest.raises(ProviderAuthError):  # entra-1 is not accepted by this resource
        await p.generate(ProviderRequest(prompt="x"), server.context())
    await p.generate(ProviderRequest(prompt="x"), server.context())
    assert len(credential.calls) == 2
    assert server.requests[-1].headers["authorization"] == "Bearer entra-2"


async def test_entra_without_azure_identity_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("azure.identity", "azure.identity.aio"):  # as if the extra were missing
        monkeypatch.setitem(sys.modules, name, None)
    server = FakeServer(AzureFake())
    p = make(server, api_key=None, entra_id=True)
    with pytest.raises(ProviderAuthError, match=r"pixelgate\[azure\]"):
        await p.generate(ProviderRequest(prompt="x"), server.context())
    assert server.requests == []


def test_settings_name_the_unknown_deployment_model() -> None:
    with pytest.raises(ValidationError, match="dall-e-2"):
        AzureOpenAISettings(deployments={"dall-e-2": "x"})


def test_not_configured_without_endpoint_or_credential() -> None:
    server = FakeServer(AzureFake())
    assert not make(server, base_url=None).configured
    assert not make(server, api_key=None).configured
    assert load_kind("azure_openai") is AzureOpenAIProvider


async def test_health_lists_models_on_the_resource() -> None:
    server = FakeServer(AzureFake())
    health = await make(server).health()
    assert health.healthy
    assert server.requests[0].url.path == "/openai/models"
    bad = FakeServer(AzureFake(key="other"))
    assert (await make(bad).health()).status == "auth_failed"


def test_prices_follow_the_openai_table() -> None:
    p = make(FakeServer(AzureFake()))
    request = ProviderRequest(prompt="x", quality="low", n=2)
    assert p.price(request) == Decimal("0.022")
    assert json.dumps(str(p.models["gpt-image-1"].price_usd))
