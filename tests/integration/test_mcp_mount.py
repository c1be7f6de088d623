"""How ``/mcp`` is mounted: only with the ``mcp`` extra, and only while the lifespan runs."""

from __future__ import annotations

import importlib.util
from typing import Any

import httpx
import pytest

from pixelgate.api.app import create_app
from pixelgate.config import Settings
from pixelgate.runtime import Runtime
from tests.conftest import ADMIN_KEY

MESSAGE = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


async def _post(app: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # no lifespan: the MCP transport is not running
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.post(
            "/mcp", json=MESSAGE, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )


async def test_without_its_lifespan_mcp_answers_503(settings: Settings, runtime: Runtime) -> None:
    r = await _post(create_app(settings, runtime=runtime, run_worker=False))
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


async def test_without_the_extra_there_is_no_mcp(
    settings: Settings, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mcp" else real(name, *a)
    )
    r = await _post(create_app(settings, runtime=runtime, run_worker=False))
    assert r.status_code == 404
