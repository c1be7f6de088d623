"""The API's routers behind their paths' holders, the rarely used ones declared at their
first use (``api/route_table.py``): the app answers, documents and lists exactly what the
app with every router included at once does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from pixelgate.api.app import create_app
from pixelgate.api.hot import HotRoute
from pixelgate.api.lazy_routes import LazyRoutes
from pixelgate.api.route_table import ROUTE_MODULES, RouteModule, eager_routes, routes_for
from pixelgate.config import Settings
from pixelgate.runtime import Runtime
from tests.conftest import ADMIN_KEY

LAZY = [m for m in ROUTE_MODULES if m.lazy]
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")


def _client(app: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


def _holders(app: Any) -> dict[str, LazyRoutes]:
    """The table's holders by module name (in the table's order)."""
    holders = [r for r in app.router.routes if isinstance(r, LazyRoutes) and r.listed]
    assert len(holders) == len(ROUTE_MODULES)
    return {m.name: h for m, h in zip(ROUTE_MODULES, holders, strict=True)}


def _operations() -> list[tuple[str, str]]:
    """(method, a concrete path) for every route of the table."""
    ops = []
    for module in ROUTE_MODULES:
        for route in module.router().routes:
            assert isinstance(route, APIRoute)
            path = _PARAM.sub(lambda m: "x" if m.group(1) != "key" else "a/b.png", route.path)
            ops += [(method, path) for method in sorted(route.methods)]
    return ops


@pytest.mark.parametrize("module", ROUTE_MODULES, ids=lambda m: m.name.rsplit(".", 1)[1])
def test_a_routers_prefixes_cover_every_path_its_routes_can_match(module: RouteModule) -> None:
    for route in module.router().routes:
        literal = getattr(route, "path", "").split("{", 1)[0]
        assert literal.startswith(module.prefixes), (module.name, route)


async def test_the_openapi_document_is_byte_identical_to_the_eager_apps(
    settings: Settings, runtime: Runtime
) -> None:
    eager = create_app(settings, runtime=runtime, run_worker=False, lazy=False)
    lazy = create_app(settings, runtime=runtime, run_worker=False)
    partly = create_app(settings, runtime=runtime, run_worker=False)
    async with _client(eager) as e, _client(lazy) as lz, _client(partly) as p:
        expected = (await e.get("/openapi.json")).content
        assert not any(_holders(lazy)[m.name].loaded for m in LAZY)
        assert (await lz.get("/openapi.json")).content == expected
        for path in ("/admin/stats", "/v1/templates", "/generate", "/metrics"):
            await p.get(path)  # some built before the document, out of the table's order
        assert (await p.get("/openapi.json")).content == expected
    assert b'"/admin/accounts/{name}/routing"' in expected and b'"/api/generate"' in expected
    (ui,) = [r for r in lazy.router.routes if isinstance(r, LazyRoutes) and not r.listed]
    assert not ui.loaded  # the document does not load the web UI


async def test_the_route_list_is_the_eager_apps(settings: Settings, runtime: Runtime) -> None:
    def listing(app: Any) -> list[tuple[str, Any, Any]]:
        out = []
        for route in app.routes:
            inner = getattr(route, "original_router", None)
            for r in inner.routes if inner is not None else [route]:
                methods = getattr(r, "methods", None)
                out.append((type(r).__name__, getattr(r, "path", None), methods))
        return out

    eager = create_app(settings, runtime=runtime, run_worker=False, lazy=False)
    lazy = create_app(settings, runtime=runtime, run_worker=False)
    assert listing(lazy) == listing(eager)
    assert all(h.loaded for h in _holders(lazy).values())


async def test_requests_for_other_paths_leave_the_lazy_routers_unbuilt(app: Any) -> None:
    async with _client(app, {"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/v1/generations")).status_code == 200
        assert (await c.get("/v1/providers")).status_code == 200
        assert (await c.get("/no/such/path")).status_code == 404
        holders = _holders(app)
        assert not [m.name for m in LAZY if holders[m.name].loaded]
        assert (await c.get("/admin/stats")).status_code == 200
    assert [m.name for m in LAZY if holders[m.name].loaded] == [
        "pixelgate.api.routes.admin_reports"
    ]


def _same(response: httpx.Response) -> tuple[Any, ...]:
    """What must not differ between the two apps (the request id aside)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.content
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "request_id"}
        if isinstance(body.get("error"), dict):
            body["error"] = {k: v for k, v in body["error"].items() if k != "request_id"}
    return (
        response.status_code,
        response.headers.get("allow"),
        response.headers.get("content-type"),
        body,
    )


async def test_each_route_answers_its_first_request_as_the_eager_app_does(
    settings: Settings, runtime: Runtime
) -> None:
    """Every operation without a key, and OPTIONS and an unsupported method on its path,
    each the first request of a new lazy app, against the same on the eager app."""
    eager = create_app(settings, runtime=runtime, run_worker=False, lazy=False)
    requests = [(m, p) for m, p in _operations()]
    requests += [(m, p) for _, p in _operations() for m in ("OPTIONS", "PUT", "TRACE")]
    async with _client(eager) as e:
        for method, path in dict.fromkeys(requests):
            lazy = create_app(settings, runtime=runtime, run_worker=False)
            async with _client(lazy) as lz:
                first = await lz.request(method, path)
            expected = await e.request(method, path)
            assert _same(first) == _same(expected), (method, path)


async def test_admin_reads_answer_as_the_eager_app_does(
    settings: Settings, runtime: Runtime
) -> None:
    """The table's GET routes with the admin key, each the first request of a new app."""
    eager = create_app(settings, runtime=runtime, run_worker=False, lazy=False)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    volatile = {"/admin/status", "/metrics", "/health"}  # uptime, counters, timings
    async with _client(eager, headers) as e:
        for method, path in _operations():
            if method != "GET" or "/events" in path:
                continue
            lazy = create_app(settings, runtime=runtime, run_worker=False)
            async with _client(lazy, headers) as lz:
                first = await lz.get(path)
            expected = await e.get(path)
            if path in volatile:
                assert first.status_code == expected.status_code, path
            else:
                assert _same(first) == _same(expected), path


def test_the_hot_routes_are_in_routers_included_at_once() -> None:
    """HotPathMiddleware knows the hot routes from ``eager_routes()``."""
    hot = {r.path for m in ROUTE_MODULES for r in m.router().routes if isinstance(r, HotRoute)}
    assert hot == {r.path for r in eager_routes() if isinstance(r, HotRoute)}
    assert {"/v1/generations", "/v1/images/generations"} <= hot


def test_the_allow_header_sees_the_lazy_routers_routes() -> None:
    paths = {getattr(r, "path", None) for r in routes_for("/admin/accounts/x/routing")}
    assert "/admin/accounts/{name}/routing" in paths and "/admin/accounts/{name}" in paths
    assert not list(routes_for("/nothing/here"))


async def test_options_and_405_on_a_lazy_routers_path(app: Any) -> None:
    async with _client(app, {"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        options = await c.options("/admin/accounts/x")
        assert options.status_code == 204
        assert set(options.headers["allow"].split(", ")) == {"GET", "PATCH", "OPTIONS"}
        refused = await c.delete("/admin/config")
        assert refused.status_code == 405
        assert set(refused.headers["allow"].split(", ")) == {"GET", "PUT", "OPTIONS"}
        assert refused.json()["error"]["code"] == "method_not_allowed"


_UPTIME_SCRIPT = """
import asyncio, json, sys, time
import httpx
from pixelgate.api.app import create_app
from pixelgate.config import load_settings

async def main():
    app = create_app(load_settings(data_dir=sys.argv[1], admin_key=sys.argv[2]))
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.5)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": "Bearer " + sys.argv[2]}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/admin/status", headers=headers)
    print(json.dumps({"status": r.status_code, "uptime_s": r.json()["uptime_s"]}))

asyncio.run(main())
"""


def test_admin_status_counts_the_uptime_from_the_start_not_its_first_request(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    done = subprocess.run(
        [sys.executable, "-c", _UPTIME_SCRIPT, str(tmp_path), ADMIN_KEY],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["uptime_s"] >= 0.5
