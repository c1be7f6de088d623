"""The MCP server, driven by the SDK's own client: streamable HTTP at ``/mcp`` on a live
``pixelgate serve``, and stdio through a spawned ``pixelgate mcp``."""

from __future__ import annotations

import asyncio
import base64
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, ImageContent
from PIL import Image as PILImage

from tests.acceptance.conftest import ADMIN_KEY, Launcher, Server, placeholder_config

CONFIG = placeholder_config(latency_ms=300)
TIMEOUT = httpx2.Timeout(30.0, read=120.0)


@pytest.fixture(scope="module")
def server(module_launcher: Launcher) -> Server:
    return module_launcher.start(config=CONFIG)


@pytest.fixture(scope="module")
def keys(server: Server) -> Iterator[dict[str, str]]:
    """API keys of accounts ``agent`` (100 credits), ``other`` and ``broke`` (0 credits)."""
    admin = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    out = {}
    for name, credits in (("agent", 100), ("other", 100), ("broke", 0)):
        r = admin.post("/admin/accounts", json={"name": name, "tier": "PRO", "credits": credits})
        assert r.status_code == 201, r.text
        r = admin.post(f"/admin/accounts/{name}/keys", json={})
        assert r.status_code == 201, r.text
        out[name] = r.json()["key"]
    yield out
    admin.close()


def over_http(server: Server, key: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)
    return Client(streamable_http_client(f"{server.base_url}/mcp", http_client=http))


def call(client_factory: Callable[[], Client], *calls: tuple[str, dict[str, Any]]) -> Any:
    """Run tool calls in one session; returns the list of results (and the tool names)."""

    async def main() -> tuple[list[str], list[CallToolResult]]:
        async with client_factory() as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            results = [await client.call_tool(name, args) for name, args in calls]
            return tools, results

    return asyncio.run(main())


def data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    return " ".join(getattr(block, "text", "") for block in result.content)


def test_http_needs_an_api_key(server: Server) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream"}
    for auth in ({}, {"Authorization": "Bearer pg_not_a_key"}):
        r = httpx.post(f"{server.base_url}/mcp", json=body, headers={**headers, **auth})
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


def test_http_generate_image_returns_urls_and_images(server: Server, keys: dict[str, str]) -> None:
    tools, [first, listed, account] = call(
        lambda: over_http(server, keys["agent"]),
        ("generate_image", {"prompt": "a red kite", "size": "64x48", "seed": 3,
                            "include_images": True}),
        ("list_generations", {}),
        ("get_account", {}),
    )
    assert any("generate" in name for name in tools)
    assert {"start_generation", "get_generation", "list_providers", "estimate_cost",
            "list_generations"} <= set(tools)
    body = data(first)
    assert body["status"] == "SUCCEEDED" and body["provider"] == "fast"
    [image] = body["images"]
    assert (image["width"], image["height"]) == (64, 48)
    fetched = httpx.get(image["url"])
    assert fetched.status_code == 200 and fetched.content[:8] == b"\x89PNG\r\n\x1a\n"
    [inline] = [block for block in first.content if isinstance(block, ImageContent)]
    assert inline.mime_type == "image/png"
    raw = base64.b64decode(inline.data)
    assert raw == fetched.content and PILImage.open(io.BytesIO(raw)).size == (64, 48)
    # the agent's generations and money: its own account, charged once
    assert [g["id"] for g in data(listed)["generations"]] == [body["id"]]
    assert data(account)["credits"] == 100 - body["cost"]["credits"]


def test_http_start_and_check_on_a_generation(server: Server, keys: dict[str, str]) -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with over_http(server, keys["agent"]) as client:
            started = data(await client.call_tool(
                "start_generation", {"prompt": "a slow boat", "aspect_ratio": "16:9"}
            ))
            for _ in range(100):
                current = data(await client.call_tool(
                    "get_generation", {"generation_id": started["id"]}
                ))
                if current["status"] == "SUCCEEDED":
                    return started, current
                await asyncio.sleep(0.1)
            raise AssertionError(f"not finished: {current}")

    started, finished = asyncio.run(main())
    assert started["status"] in ("PENDING", "PROCESSING") and not started["images"]
    assert finished["id"] == started["id"]
    assert (finished["images"][0]["width"], finished["images"][0]["height"]) == (1024, 576)


def test_http_catalog_and_estimate(server: Server, keys: dict[str, str]) -> None:
    _, [providers, estimate] = call(
        lambda: over_http(server, keys["agent"]),
        ("list_providers", {}),
        ("estimate_cost", {"prompt": "a hat", "n": 2, "size": "64x64"}),
    )
    [fast] = [p for p in data(providers)["providers"] if p["name"] == "fast"]
    assert fast["configured"] and fast["models"][0]["capabilities"]
    assert "price_usd" in fast["models"][0]
    body = data(estimate)
    assert body["provider"] == "fast" and body["affordable"] and body["credits"] >= 0


def test_http_agents_see_only_their_own_account(server: Server, keys: dict[str, str]) -> None:
    _, [theirs] = call(lambda: over_http(server, keys["other"]),
                       ("generate_image", {"prompt": "private", "size": "32x32"}))
    other_id = data(theirs)["id"]
    _, [peek, listed, cancel] = call(
        lambda: over_http(server, keys["agent"]),
        ("get_generation", {"generation_id": other_id}),
        ("list_generations", {"limit": 50}),
        ("cancel_generation", {"generation_id": other_id}),
    )
    assert "not_found" in error_text(peek)
    assert other_id not in {g["id"] for g in data(listed)["generations"]}
    assert "not_found" in error_text(cancel)


def test_http_refusals_write_and_charge_nothing(server: Server, keys: dict[str, str]) -> None:
    _, [poor, bad_size, bad_provider, listed] = call(
        lambda: over_http(server, keys["broke"]),
        ("generate_image", {"prompt": "a yacht", "size": "64x64"}),
        ("generate_image", {"prompt": "a yacht", "size": "huge"}),
        ("start_generation", {"prompt": "a yacht", "provider": "nope"}),
        ("list_generations", {}),
    )
    assert "insufficient_credits" in error_text(poor)
    assert "size" in error_text(bad_size)
    assert "nope" in error_text(bad_provider)
    assert data(listed)["generations"] == []


def _make_key(run_cli: Callable[..., Any], env: dict[str, str], account: str) -> str:
    run_cli(["accounts", "create", account, "--tier", "PRO", "--credits", "10"], env=env,
            check=True)
    out = run_cli(["keys", "create", "--account", account], env=env, check=True)
    return str(out.stdout.strip().splitlines()[-1])


def over_stdio(env: dict[str, str], cwd: Path) -> Client:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "pixelgate", "mcp"], env=env, cwd=cwd
    )
    return Client(params)


def test_stdio_as_the_key_of_the_environment(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    config = tmp_path / "pixelgate.toml"
    config.write_text(placeholder_config())
    env = {"PIXELGATE_DATA_DIR": str(tmp_path / "data"), "PIXELGATE_CONFIG": str(config),
           "PIXELGATE_ADMIN_KEY": ADMIN_KEY}
    key = _make_key(run_cli, env, "desk")
    other = _make_key(run_cli, env, "someone-else")
    agent_env = {**env, "PIXELGATE_API_KEY": key}
    tools, [made, listed, account] = call(
        lambda: over_stdio(agent_env, tmp_path),
        ("generate_image", {"prompt": "a desk lamp", "size": "40x30", "include_images": True}),
        ("list_generations", {}),
        ("get_account", {}),
    )
    assert "generate_image" in tools
    body = data(made)
    assert body["status"] == "SUCCEEDED" and body["images"][0]["width"] == 40
    assert any(isinstance(block, ImageContent) for block in made.content)
    assert [g["id"] for g in data(listed)["generations"]] == [body["id"]]
    assert data(account)["name"] == "desk"
    assert data(account)["credits"] == 10 - body["cost"]["credits"]
    # another key of the same data dir sees nothing of desk's
    _, [theirs] = call(lambda: over_stdio({**env, "PIXELGATE_API_KEY": other}, tmp_path),
                       ("list_generations", {}))
    assert data(theirs)["generations"] == []


def test_stdio_refuses_a_bad_key(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    env = {"PIXELGATE_DATA_DIR": str(tmp_path / "data"), "PIXELGATE_ADMIN_KEY": ADMIN_KEY,
           "PIXELGATE_API_KEY": "pg_wrong"}
    result = run_cli(["mcp"], env=env, timeout=60)
    assert result.returncode == 1
    assert "invalid API key" in result.stderr and result.stdout == ""

