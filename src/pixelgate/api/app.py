"""``create_app(settings)``: the FastAPI application and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import structlog
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelgate.api.bodylimit import BodyLimitMiddleware
from pixelgate.api.deps import KeyCache
from pixelgate.api.docs import install_docs
from pixelgate.api.errors import install_error_handlers
from pixelgate.api.hot import HotPathMiddleware
from pixelgate.api.lazy_routes import LazyRoutingFastAPI, include_lazily
from pixelgate.api.responses import JSONResponse
from pixelgate.api.route_table import ROUTE_MODULES, RouteModule, eager_routes, routes_for
from pixelgate.api.text import refuse_unstorable_text
from pixelgate.config import Settings
from pixelgate.core.ids import new_id
from pixelgate.integrations.mcp_http import install_mcp
from pixelgate.observability.http import MetricsMiddleware
from pixelgate.runtime import Runtime
from pixelgate.ui import is_ui_path

__all__ = ["create_app"]

MAX_REQUEST_ID = 128


class RequestIdMiddleware:
    """Keeps an incoming ``X-Request-ID`` (or makes one) and echoes it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:MAX_REQUEST_ID]
                break
        if not request_id or not request_id.isprintable():
            request_id = new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)  # on its log lines
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    run_worker: bool | None = None,
    migrate: bool = True,
    lazy: bool = True,
) -> FastAPI:
    """Build the app. Without ``runtime`` the lifespan opens (and closes) its own.

    ``migrate=False`` when the caller already applied the migrations (``pixelgate serve``
    does, so a broken database stops start-up with one clear line before uvicorn runs).
    ``lazy=False`` includes every API router at once, as FastAPI apps usually do (the
    answers, the OpenAPI document and the route list are the same: tests compare them).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        own = runtime is None
        rt = runtime or await Runtime.open(settings, migrate=migrate)
        app.state.runtime = rt
        want_worker = settings.worker if run_worker is None else run_worker
        if want_worker and rt.worker is None:
            await rt.start_worker()
        if own:
            await rt.start_observability()
        try:
            yield {}
        finally:
            if own:
                await rt.close()
            elif want_worker and rt.worker is not None:
                await rt.worker.stop(settings.shutdown_grace_s)
                rt.worker = None

    app = LazyRoutingFastAPI(
        title="pixelgate",
        version="0.1.0",
        description="Self-hosted, provider-agnostic AI image-generation gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # pixelgate makes its own request span (observability/http.py); FastAPI's would
        # be a second one, and asking whether it is on reads the environment per request
        telemetry={"tracing": False, "metrics": False, "logs": False},
        default_response_class=JSONResponse,
    )
    install_docs(app, title=app.title)
    app.state.key_cache = KeyCache()
    if runtime is not None:
        app.state.runtime = runtime
    install_error_handlers(app)

    from pixelgate.api.contract import AllowMiddleware
    from pixelgate.api.routes import ws
    from pixelgate.api.uploads import multipart_limit

    include_routers(app, lazy=lazy)
    include_lazily(app, is_ui_path, _include_ui)  # /ui (and /): built at its first request
    app.include_router(ws.ws_router)  # WebSockets: no HTTP-only dependencies
    install_mcp(app)  # /mcp for agents (with the mcp extra)
    app.add_middleware(AllowMiddleware, routes=routes_for)
    # below it: not on the hot path; the hot routes are in the routers included at once
    app.add_middleware(HotPathMiddleware, routes=eager_routes())
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_multipart_bytes=multipart_limit(settings.max_image_bytes),
    )
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(MetricsMiddleware)  # outermost: times and counts every answer
    return app


def include_routers(app: FastAPI, *, lazy: bool = True) -> None:
    """Include the routers of :data:`ROUTE_MODULES`, in order, with their error responses
    documented; each behind its paths' holder, the lazy ones built at their first use."""
    for module in ROUTE_MODULES:
        if not lazy:
            _include_module(app, module)
            continue
        include_lazily(
            app,
            module.claims,
            partial(_include_module, module=module),
            listed=True,
            now=not module.lazy,
        )


def _include_module(app: FastAPI, module: RouteModule) -> None:
    from pixelgate.api.contract import document_errors

    router = module.router()
    document_errors(router.routes)
    app.include_router(router, dependencies=[Depends(refuse_unstorable_text)])


def _include_ui(app: FastAPI) -> None:
    from pixelgate.ui.routes import router as ui_router

    app.include_router(ui_router, dependencies=[Depends(refuse_unstorable_text)])
