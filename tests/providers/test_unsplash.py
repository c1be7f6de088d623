"""Unsplash adapter against a fake API (PROVIDERS.md §8)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    Transient,
)
from pixelgate.providers import unsplash
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.unsplash import UnsplashProvider, UnsplashSettings
from tests.providers.kit import SECRET, FakeServer, assert_secret_absent, reply


def photo(photo_id: str = "Dwu85P9SOIk", name: str = "Ann Doe") -> dict[str, Any]:
    return {
        "id": photo_id,
        "created_at": "2016-05-03T11:00:28-04:00",
        "width": 2448,
        "height": 3264,
        "color": "#6E633A",
        "blur_hash": "LFC$yHwc8^$yIAS$%M%00KxukYIp",
        "description": "A man drinking a coffee.",
        "alt_description": "man holding cup",
        "urls": {
            "raw": f"https://images.unsplash.com/photo-{photo_id}?ixid=abc&ixlib=rb-4.0.3",
            "full": f"https://images.unsplash.com/photo-{photo_id}?q=85",
            "regular": f"https://images.unsplash.com/photo-{photo_id}?w=1080",
            "small": f"https://images.unsplash.com/photo-{photo_id}?w=400",
            "thumb": f"https://images.unsplash.com/photo-{photo_id}?w=200",
        },
        "links": {
            "self": f"https://api.unsplash.com/photos/{photo_id}",
            "html": f"https://unsplash.com/photos/{photo_id}",
            "download": f"https://unsplash.com/photos/{photo_id}/download",
            "download_location": f"https://api.unsplash.com/photos/{photo_id}/download?ixid=abc",
        },
        "user": {
            "id": "QPxL2MGqfrw",
            "username": "anndoe",
            "name": name,
            "links": {
                "self": "https://api.unsplash.com/users/anndoe",
                "html": "https://unsplash.com/@anndoe",
                "photos": "https://api.unsplash.com/users/anndoe/photos",
            },
            "profile_image": {"small": "https://images.unsplash.com/profile-1?w=32"},
        },
    }


def make(server: FakeServer, **settings: Any) -> UnsplashProvider:
    options: dict[str, Any] = {"api_key": SecretStr(SECRET)}
    options.update(settings)
    return UnsplashProvider("unsplash", UnsplashSettings(**options), server.client())


def authorized(request: httpx.Request) -> None:
    assert request.method == "GET"
    assert request.url.host == "api.unsplash.com"
    assert request.headers["authorization"] == f"Client-ID {SECRET}"
    assert request.headers["accept-version"] == "v1"


def tracked(request: httpx.Request) -> httpx.Response:
    return reply(200, {"url": "https://images.unsplash.com/photo-x?ixid=abc"})


async def test_search_picks_a_cropped_photo_with_attribution_and_tracks_the_download() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        authorized(request)
        if request.url.path == "/search/photos":
            params = request.url.params
            assert params["query"] == "a red fox in snow"
            assert params["orientation"] == "landscape"
            assert params["content_filter"] == "high"
            assert params["per_page"] == "10"
            return reply(
                200,
                {"total": 2, "total_pages": 1, "results": [photo(), photo("other")]},
                headers={"X-Ratelimit-Limit": "50", "X-Ratelimit-Remaining": "49"},
            )
        assert request.url.path == "/photos/Dwu85P9SOIk/download"
        assert request.url.params["ixid"] == "abc"
        return tracked(request)

    server = FakeServer(handler)
    req = ProviderRequest("a red fox in snow", width=1600, height=900, format="webp")
    res = await make(server).generate(req, server.context())
    (image,) = res.images
    assert image.url is not None
    url = urlsplit(image.url)
    assert url.netloc == "images.unsplash.com"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query == {
        "ixid": "abc",
        "ixlib": "rb-4.0.3",
        "w": "1600",
        "h": "900",
        "fit": "crop",
        "fm": "webp",
    }
    attribution = image.attribution
    assert attribution is not None
    assert attribution["text"] == "Photo by Ann Doe on Unsplash"
    assert attribution["photo_id"] == "Dwu85P9SOIk"
    assert attribution["photographer"] == "Ann Doe"
    assert attribution["photographer_url"] == (
        "https://unsplash.com/@anndoe?utm_source=pixelgate&utm_medium=referral"
    )
    assert attribution["photo_url"] == (
        "https://unsplash.com/photos/Dwu85P9SOIk?utm_source=pixelgate&utm_medium=referral"
    )
    assert res.cost_usd == Decimal("0")
    assert len(server.seen("GET", "/photos/Dwu85P9SOIk/download")) == 1


async def test_seed_rotates_the_search_results() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/search/photos":
            return reply(200, {"total": 3, "results": [photo("a"), photo("b"), photo("c")]})
        return tracked(request)

    server = FakeServer(handler)
    req = ProviderRequest("x", n=2, seed=4)
    res = await make(server).generate(req, server.context())
    assert [img.attribution["photo_id"] for img in res.images if img.attribution] == ["b", "c"]


@pytest.mark.parametrize("as_array", [True, False])
async def test_random_mode_handles_object_and_array(as_array: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        authorized(request)
        if request.url.path == "/photos/random":
            assert request.url.params["count"] == "1"
            assert request.url.params["orientation"] == "portrait"
            assert request.url.params["query"] == "x"
            return reply(200, [photo()] if as_array else photo())
        return tracked(request)

    server = FakeServer(handler)
    req = ProviderRequest("x", width=600, height=900, format="jpeg")
    res = await make(server, mode="random").generate(req, server.context())
    assert res.images[0].url is not None and "fm=jpg" in res.images[0].url
    assert res.images[0].content_type == "image/jpeg"


async def test_failed_download_tracking_does_not_fail_the_job() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/search/photos":
            return reply(200, {"total": 1, "results": [photo()]})
        return httpx.Response(500)

    server = FakeServer(handler)
    res = await make(server).generate(ProviderRequest("x"), server.context())
    assert len(res.images) == 1


async def test_hanging_download_tracking_does_not_fail_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/search/photos":
            return reply(200, {"total": 1, "results": [photo()]})
        await asyncio.sleep(30)
        return httpx.Response(200)

    monkeypatch.setattr(unsplash, "TRACK_TIMEOUT_S", 0.05)
    server = FakeServer(handler)
    res = await make(server).generate(ProviderRequest("x"), server.context())
    assert len(res.images) == 1


async def test_tracking_never_sends_the_key_to_another_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        authorized(request)  # every request goes to api.unsplash.com
        if request.url.path == "/search/photos":
            evil = photo()
            evil["links"]["download_location"] = "https://evil.example/collect"
            return reply(200, {"total": 1, "results": [evil]})
        assert request.url.path == "/photos/Dwu85P9SOIk/download"
        return tracked(request)

    server = FakeServer(handler)
    assert (await make(server).generate(ProviderRequest("x"), server.context())).images


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(403, text="Rate Limit Exceeded"),
        httpx.Response(403, json={"errors": ["Rate Limit Exceeded"]}),
        httpx.Response(429, text="Too many requests"),
    ],
)
async def test_rate_limit_exceeded_waits_for_the_top_of_the_hour(response: httpx.Response) -> None:
    server = FakeServer(lambda r: response)
    with pytest.raises(ProviderRateLimited) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 3600


async def test_no_results_is_invalid_request() -> None:
    server = FakeServer(lambda r: reply(200, {"total": 0, "total_pages": 0, "results": []}))
    with pytest.raises(InvalidRequest, match="no stock photo matches"):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_random_with_no_match_is_invalid_request() -> None:
    server = FakeServer(lambda r: reply(404, {"errors": ["No photos found."]}))
    with pytest.raises(InvalidRequest, match="no stock photo matches"):
        await make(server, mode="random").generate(ProviderRequest("x"), server.context())


async def test_spam_flagged_query_is_invalid_request() -> None:
    server = FakeServer(lambda r: reply(410, {"errors": ["query flagged as spam"]}))
    with pytest.raises(InvalidRequest, match="spam"):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_401_is_auth_error_without_the_key() -> None:
    body = {"errors": [f"OAuth error: The access token {SECRET} is invalid"]}
    server = FakeServer(lambda r: reply(401, body))
    with pytest.raises(ProviderAuthError) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert_secret_absent(info.value)
    assert "OAuth error" in info.value.message


async def test_5xx_is_transient() -> None:
    server = FakeServer(lambda r: httpx.Response(503, text="unavailable"))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_malformed_body_is_transient() -> None:
    server = FakeServer(lambda r: reply(200, {"results": [{"id": "x"}]}))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_hang_past_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return reply(200, {"results": []})

    server = FakeServer(handler)
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.1).generate(ProviderRequest("x"), server.context())


def test_free_and_any_size() -> None:
    provider = make(FakeServer(lambda r: reply(500)))
    assert provider.price(ProviderRequest("x", n=3)) == Decimal("0")
    assert provider.models["unsplash"].capabilities.sizes == ()
