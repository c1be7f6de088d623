"""The vertex and bedrock kinds in ``GET /v1/providers``: models, capabilities, prices, health."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pixelgate.config import Settings


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        providers={
            "fast": {"kind": "placeholder"},
            "gcp": {"kind": "vertex", "project": "pixel-proj", "location": "global"},
            "aws": {"kind": "bedrock", "region": "eu-west-1"},
            "aws-off": {"kind": "bedrock"},
        },
        routing={"default": ["fast"]},
    )


async def _catalog(client: httpx.AsyncClient) -> dict[str, Any]:
    body = (await client.get("/v1/providers")).json()
    return {p["name"]: p for p in body["data"]}


async def test_vertex_and_bedrock_are_listed_with_models_and_prices(
    client: httpx.AsyncClient,
) -> None:
    by_name = await _catalog(client)
    gcp, aws = by_name["gcp"], by_name["aws"]
    assert (gcp["kind"], gcp["configured"]) == ("vertex", True)
    models = {m["name"]: m for m in gcp["models"]}
    assert {"imagen-4.0-generate-001", "gemini-2.5-flash-image"} <= set(models)
    assert models["imagen-4.0-generate-001"]["price_usd"] == "0.04"
    assert models["gemini-2.5-flash-image"]["capabilities"]["edit"] is True
    assert (aws["kind"], aws["configured"]) == ("bedrock", True)
    models = {m["name"]: m for m in aws["models"]}
    assert models["amazon.nova-canvas-v1:0"]["capabilities"]["mask"] is True
    assert models["stability.stable-image-ultra-v1:1"]["price_usd"] == "0.14"
    assert "1024x1024" in models["amazon.titan-image-generator-v2:0"]["capabilities"]["sizes"]
    assert by_name["aws-off"]["configured"] is False


async def test_without_cloud_credentials_health_says_auth_failed(
    client: httpx.AsyncClient,
) -> None:
    """The test environment has no AWS or Google credentials (conftest ``_clean_env``)."""
    by_name = await _catalog(client)
    assert by_name["gcp"]["health"]["status"] == "auth_failed"
    assert by_name["aws"]["health"]["status"] == "auth_failed"
    assert by_name["aws-off"]["health"]["status"] == "not_configured"
