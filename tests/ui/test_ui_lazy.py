"""The UI's routes are built at the first request that may need them, in the place
``include_router`` gave them: the answers are those of routes built with the app."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.routing import APIRoute

from pixelgate.api.lazy_routes import LazyRoutes
from pixelgate.ui import is_ui_path
from pixelgate.ui.routes import router as ui_router


def _lazy(app: Any) -> LazyRoutes:
    (lazy,) = [r for r in app.router.routes if isinstance(r, LazyRoutes) and not r.listed]
    return lazy


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def test_every_ui_route_is_claimed_by_the_lazy_holder() -> None:
    paths = [r.path for r in ui_router.routes if isinstance(r, APIRoute)]
    assert paths and all(is_ui_path(p) for p in paths)
    assert not any(is_ui_path(p) for p in ("/v1/generations", "/health", "/uix", "/files/a"))


async def test_api_requests_do_not_build_the_ui(app: Any) -> None:
    async with _client(app) as c:
        assert (await c.get("/health/live")).status_code == 200
        assert (await c.get("/no/such/route")).status_code == 404
    assert not _lazy(app).loaded


async def test_the_first_ui_request_builds_its_routes_in_place(app: Any) -> None:
    count = len(app.router.routes)
    async with _client(app) as c:
        page = await c.get("/ui/login")
        assert page.status_code == 200 and "csrf_token" in page.text
        assert _lazy(app).loaded and len(app.router.routes) == count
        assert (await c.get("/")).headers["location"] == "/ui"
        refused = await c.put("/ui/login")
        assert refused.status_code == 405
        assert refused.json()["error"]["code"] == "method_not_allowed"
        missing = await c.get("/ui/no-such-page")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_the_ui_stays_out_of_the_openapi_document(app: Any) -> None:
    async with _client(app) as c:
        await c.get("/ui/login")
        paths = (await c.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if is_ui_path(p)]
