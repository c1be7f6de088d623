"""Vertex adapter against a fake OAuth token server (loopback) and a fake Vertex endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pixelgate.errors import ProviderAuthError, ProviderRateLimited, ProviderTimeout, Refused
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.vertex import VertexProvider, VertexSettings
from tests.fakes import FakeJobContext
from tests.providers.fakes.google import (
    PROJECT,
    FakeTokenServer,
    FakeVertex,
    google_error,
    service_account,
)
from tests.providers.kit import PNG, b64, client, hang

IMAGEN = "imagen-4.0-generate-001"
FLASH = "gemini-2.5-flash-image"
PRO = "gemini-3-pro-image-preview"


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTokenServer]:
    server = FakeTokenServer(public_pem=b"")
    with server:
        path, public_pem = service_account(tmp_path_factory.mktemp("gcp"), server.token_uri)
        server.public_pem = public_pem
        server.credentials_file = path  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def tokens(token_server: FakeTokenServer) -> FakeTokenServer:
    """The module's token server, with no token issued and default behaviour."""
    token_server.expires_in, token_server.reject, token_server.grants = 3600, None, 0
    token_server.issued.clear()
    return token_server


def make(
    tokens: FakeTokenServer, fake: Any, *, base_url: str | None = "http://vertex.test", **extra: Any
) -> VertexProvider:
    values: dict[str, Any] = {
        "kind": "vertex",
        "credentials_file": str(tokens.credentials_file),  # type: ignore[attr-defined]
        "base_url": base_url,
        "timeout_s": 5.0,
        **extra,
    }
    return VertexProvider("vertex", VertexSettings(**values), client(fake))


def ctx() -> FakeJobContext:
    return FakeJobContext(http=httpx.AsyncClient())


async def test_imagen_generates_through_predict_with_a_service_account_token(
    tokens: FakeTokenServer,
) -> None:
    fake = FakeVertex(tokens)
    provider = make(tokens, fake)
    result = await provider.generate(
        ProviderRequest(prompt="a red fox", model=IMAGEN, n=2, width=1344, height=768), ctx()
    )
    assert [i.data for i in result.images] == [PNG, PNG]
    assert result.cost_usd == 2 * provider.models[IMAGEN].price_usd
    (request,) = fake.requests
    assert request.url.path == (
        f"/v1/projects/{PROJECT}/locations/us-central1/publishers/google/models/{IMAGEN}:predict"
    )
    assert request.headers["authorization"] == "Bearer ya29.fake-1"
    params = __import__("json").loads(request.content)["parameters"]
    assert params["sampleCount"] == 2 and params["aspectRatio"] == "16:9"
    assert "seed" not in params and "addWatermark" not in params


async def test_imagen_sends_the_seed_only_with_the_watermark_off(tokens: FakeTokenServer) -> None:
    fake = FakeVertex(tokens)
    provider = make(tokens, fake, add_watermark=False, person_generation="allow_all")
    assert provider.models[IMAGEN].capabilities.seed is True
    await provider.generate(ProviderRequest(prompt="x", model=IMAGEN, seed=7), ctx())
    params = __import__("json").loads(fake.requests[0].content)["parameters"]
    assert params["seed"] == 7 and params["addWatermark"] is False
    assert params["personGeneration"] == "ALLOW_ALL"


async def test_gemini_edits_through_generate_content(tokens: FakeTokenServer) -> None:
    fake = FakeVertex(tokens)
    provider = make(tokens, fake, model_locations={PRO: "global"})
    result = await provider.generate(
        ProviderRequest(prompt="add a hat", model=PRO, edit_image=PNG, width=3072, height=3072),
        ctx(),
    )
    assert result.images[0].data == PNG
    assert result.cost_usd == provider.models[PRO].price_usd
    (request,) = fake.requests
    assert "/locations/global/" in request.url.path
    assert request.url.path.endswith(f"/models/{PRO}:generateContent")
    body = __import__("json").loads(request.content)
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"text": "add a hat"}
    assert parts[1]["inlineData"] == {"mimeType": "image/png", "data": b64(PNG)}
    assert body["generationConfig"]["imageConfig"]["imageSize"] == "4K"


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("us-central1", "us-central1-aiplatform.googleapis.com"),
        ("global", "aiplatform.googleapis.com"),
        ("us", "aiplatform.us.rep.googleapis.com"),
        ("eu", "aiplatform.eu.rep.googleapis.com"),
    ],
)
async def test_regional_global_and_multi_region_hosts(
    tokens: FakeTokenServer, location: str, host: str
) -> None:
    fake = FakeVertex(tokens)
    provider = make(tokens, fake, base_url=None, location=location)
    await provider.generate(ProviderRequest(prompt="x", model=FLASH), ctx())
    url = fake.requests[0].url
    assert url.scheme == "https" and url.host == host
    assert f"/locations/{location}/" in url.path


async def test_a_token_is_reused_while_it_has_time_left(tokens: FakeTokenServer) -> None:
    fake = FakeVertex(tokens)
    provider = make(tokens, fake)
    for _ in range(3):
        await provider.generate(ProviderRequest(prompt="x", model=FLASH), ctx())
    assert tokens.grants == 1
    assert fake.bearers == ["ya29.fake-1"] * 3


async def test_a_token_is_refreshed_before_it_expires(tokens: FakeTokenServer) -> None:
    tokens.expires_in = 200  # inside the 300 s refresh margin from the start
    fake = FakeVertex(tokens)
    provider = make(tokens, fake)
    await provider.generate(ProviderRequest(prompt="x", model=FLASH), ctx())
    await provider.generate(ProviderRequest(prompt="x", model=FLASH), ctx())
    assert fake.bearers == ["ya29.fake-1", "ya29.fake-2"]
    # the first token was still good when it was replaced: no 401 was needed
    assert tokens.valid("ya29.fake-1")
    assert provider.tokens.refreshes == 2


async def test_a_revoked_token_is_refreshed_once_and_the_call_retried(
    tokens: FakeTokenServer,
) -> None:
    fake = FakeVertex(tokens)
    provider = make(tokens, fake)
    await provider.generate(ProviderRequest(prompt="x", model=FLASH), ctx())
    tokens.expire_all()
    result = await provider.generate(ProviderRequest(prompt="x", model=FLASH), ctx())
    assert result.images
    assert fake.bearers == ["ya29.fake-1", "ya29.fake-1", "ya29.fake-2"]


async def test_a_rejected_grant_is_an_auth_error(tokens: FakeTokenServer) -> None:
    tokens.reject = "invalid_grant"
    fake = FakeVertex(tokens)
    with pytest.raises(ProviderAuthError, match="invalid_grant"):
        await make(tokens, fake).generate(ProviderRequest(prompt="x", model=FLASH), ctx())
    assert fake.requests == []


async def test_permission_denied_is_an_auth_error(tokens: FakeTokenServer) -> None:
    fake = FakeVertex(
        tokens,
        answer=lambda r, i: google_error(
            403, "PERMISSION_DENIED", "Vertex AI API has not been used in project"
        ),
    )
    with pytest.raises(ProviderAuthError, match="PERMISSION_DENIED"):
        await make(tokens, fake).generate(ProviderRequest(prompt="x", model=IMAGEN), ctx())


async def test_quota_exhaustion_is_rate_limited_with_retry_after(tokens: FakeTokenServer) -> None:
    def quota(request: httpx.Request, info: dict[str, Any]) -> httpx.Response:
        response = google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for aiplatform.googleapis.com/"
            "online_prediction_requests_per_base_model",
        )
        response.headers["Retry-After"] = "17"
        return response

    with pytest.raises(ProviderRateLimited) as caught:
        await make(tokens, FakeVertex(tokens, answer=quota)).generate(
            ProviderRequest(prompt="x", model=IMAGEN), ctx()
        )
    assert caught.value.retry_after == 17


async def test_imagen_with_every_image_filtered_is_refused(tokens: FakeTokenServer) -> None:
    fake = FakeVertex(tokens, answer=lambda r, i: httpx.Response(200, json={}))
    with pytest.raises(Refused):
        await make(tokens, fake).generate(ProviderRequest(prompt="x", model=IMAGEN, n=2), ctx())


async def test_imagen_keeps_the_images_that_were_not_filtered(tokens: FakeTokenServer) -> None:
    from tests.providers.fakes.google import imagen_predictions

    fake = FakeVertex(
        tokens, answer=lambda r, i: httpx.Response(200, json=imagen_predictions(3, 2))
    )
    provider = make(tokens, fake)
    result = await provider.generate(ProviderRequest(prompt="x", model=IMAGEN, n=3), ctx())
    assert len(result.images) == 1
    assert result.cost_usd == provider.models[IMAGEN].price_usd


async def test_a_blocked_imagen_call_is_refused(tokens: FakeTokenServer) -> None:
    message = (
        "Image generation failed with the following error: The response is blocked, as it "
        "may violate our policies. Error Code: 58061214"
    )
    fake = FakeVertex(tokens, answer=lambda r, i: google_error(400, "INVALID_ARGUMENT", message))
    with pytest.raises(Refused, match="58061214"):
        await make(tokens, fake).generate(ProviderRequest(prompt="x", model=IMAGEN), ctx())


async def test_a_gemini_safety_stop_is_refused(tokens: FakeTokenServer) -> None:
    blocked = {"candidates": [{"finishReason": "IMAGE_SAFETY", "content": {"parts": []}}]}
    fake = FakeVertex(tokens, answer=lambda r, i: httpx.Response(200, json=blocked))
    with pytest.raises(Refused, match="IMAGE_SAFETY"):
        await make(tokens, fake).generate(ProviderRequest(prompt="x", model=FLASH), ctx())


async def test_a_slow_endpoint_times_out(tokens: FakeTokenServer) -> None:
    settings = VertexSettings(
        kind="vertex",
        credentials_file=str(tokens.credentials_file),  # type: ignore[attr-defined]
        base_url="http://vertex.test",
        timeout_s=0.3,
    )
    provider = VertexProvider("vertex", settings, client(hang()))
    with pytest.raises(ProviderTimeout):
        await provider.generate(ProviderRequest(prompt="x", model=FLASH), ctx())


async def test_health_gets_a_token_and_reads_the_model(tokens: FakeTokenServer) -> None:
    fake = FakeVertex(tokens)
    health = await make(tokens, fake).health()
    assert health.healthy, health
    assert fake.requests[0].url.path == f"/v1/publishers/google/models/{FLASH}"
    tokens.reject = "invalid_grant"
    assert (await make(tokens, FakeVertex(tokens)).health()).status == "auth_failed"


async def test_without_project_or_credentials_it_is_not_configured() -> None:
    provider = VertexProvider("vertex", VertexSettings(kind="vertex"), httpx.AsyncClient())
    assert provider.configured is False
    assert (await provider.health()).status == "not_configured"


async def test_application_default_credentials_come_from_the_environment(
    tokens: FakeTokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tokens.credentials_file))  # type: ignore[attr-defined]
    fake = FakeVertex(tokens)
    settings = VertexSettings(kind="vertex", project=PROJECT, base_url="http://vertex.test")
    provider = VertexProvider("vertex", settings, client(fake))
    await provider.generate(ProviderRequest(prompt="x", model=FLASH), ctx())
    assert fake.bearers == ["ya29.fake-1"]


async def test_no_application_default_credentials_is_an_auth_error() -> None:
    settings = VertexSettings(kind="vertex", project=PROJECT, base_url="http://vertex.test")
    provider = VertexProvider("vertex", settings, httpx.AsyncClient())
    with pytest.raises(ProviderAuthError, match="credentials"):
        await provider.generate(ProviderRequest(prompt="x", model=FLASH), ctx())
