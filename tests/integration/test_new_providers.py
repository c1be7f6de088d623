"""The issue-16 part A providers through the API: catalog, SVG results, fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from pixelgate.api.app import create_app
from pixelgate.runtime import Runtime
from tests.conftest import ADMIN_KEY, redirect_options
from tests.fakes import LoopbackServer, png_bytes
from tests.providers.fakes.recraft import RecraftFake
from tests.providers.fakes.xai import XAIFake
from tests.providers.kit import SECRET, loopback_routes

WAIT = {"Prefer": "wait=10"}


@pytest.fixture
def fakes() -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    recraft = loopback_routes(
        RecraftFake(raster=png_bytes(8, 8, (200, 80, 0))),
        ["/v1/images/generations", "/v1/users/me"],
    )
    broken_xai = loopback_routes(XAIFake(fail="auth"), ["/v1/images/generations"])
    with LoopbackServer(recraft) as r, LoopbackServer(broken_xai) as x:
        yield r, x


@pytest.fixture
async def client(
    make_settings: Any, fakes: tuple[LoopbackServer, LoopbackServer], scaleout_services: Any
) -> AsyncIterator[httpx.AsyncClient]:
    recraft, xai = fakes
    settings = make_settings(
        providers={
            "recraft": {"kind": "recraft", "api_key": SECRET, "base_url": recraft.url("/v1")},
            "grok": {"kind": "xai", "api_key": SECRET, "base_url": xai.url("/v1")},
            "azure": {
                "kind": "azure_openai",
                "api_key": SECRET,
                "base_url": "http://127.0.0.1:9",
                "deployments": {"gpt-image-1": "img1"},
            },
            "fast": {"kind": "placeholder"},
        },
        routing={"default": ["fast"]},
    )
    rt = await Runtime.open(settings)
    await rt.start_worker()
    try:
        app = create_app(settings, runtime=rt, run_worker=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            **redirect_options(scaleout_services),
        ) as c:
            yield c
    finally:
        await rt.close()


async def test_catalog_lists_the_new_kinds_with_capabilities_and_prices(
    client: httpx.AsyncClient,
) -> None:
    body = (await client.get("/v1/providers")).json()
    by_name = {p["name"]: p for p in body["data"]}
    assert by_name["recraft"]["configured"] and by_name["grok"]["configured"]
    assert by_name["azure"]["configured"]
    assert by_name["openrouter"]["configured"] is False  # a default instance without a key
    models = {m["name"]: m for m in by_name["recraft"]["models"]}
    assert models["recraftv3_vector"]["capabilities"]["output_formats"] == ["svg"]
    assert "svg" not in models["recraftv3"]["capabilities"]["output_formats"]
    assert [m["name"] for m in by_name["azure"]["models"]] == ["gpt-image-1"]
    grok = {m["name"]: m for m in by_name["grok"]["models"]}
    assert grok["grok-imagine-image"]["capabilities"]["max_n"] == 10
    assert all(m.get("price_usd") is not None for m in by_name["recraft"]["models"]), models


async def test_vector_model_result_is_stored_and_served_as_sanitised_svg(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/generations",
        json={"prompt": "a fox logo", "provider": "recraft", "model": "recraftv3_vector",
              "format": "svg"},
        headers=WAIT,
    )  # fmt: skip
    gen = r.json()
    assert gen["status"] == "SUCCEEDED", gen
    image = gen["images"][0]
    assert image["format"] == "svg" and image["key"].endswith(".svg")
    assert (image["width"], image["height"]) == (64, 32)
    served = await client.get(f"/files/{image['key']}")
    assert served.headers["content-type"] == "image/svg+xml"
    assert "sandbox" in served.headers["content-security-policy"]
    text = served.text
    assert "<svg" in text and "<rect" in text
    for bad in ("<script", "onclick", "tracker.example"):
        assert bad not in text, bad
    assert gen["cost"]["usd"] is not None


async def test_vector_model_rasterises_when_png_is_asked(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/generations",
        json={"prompt": "a fox logo", "provider": "recraft", "model": "recraftv3_vector"},
        headers=WAIT,
    )
    image = r.json()["images"][0]
    assert image["format"] == "png" and (image["width"], image["height"]) == (64, 32)
    served = await client.get(f"/files/{image['key']}")
    assert served.content.startswith(b"\x89PNG")


async def test_svg_from_a_raster_model_is_refused_naming_format(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/generations",
        json={"prompt": "x", "provider": "recraft", "model": "recraftv3", "format": "svg"},
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "format" and "vector" in error["message"]


async def test_fallback_from_a_failing_xai_to_recraft(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/generations",
        json={"prompt": "chain", "providers": ["grok", "recraft"]},
        headers=WAIT,
    )
    gen = r.json()
    assert gen["status"] == "SUCCEEDED", (gen["error"], gen["route"])
    assert gen["provider"] == "recraft"
    decisions = [(s["provider"], s["decision"]) for s in gen["route"]]
    assert ("grok", "failed") in decisions and ("recraft", "succeeded") in decisions
