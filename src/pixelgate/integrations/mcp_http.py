"""MCP over streamable HTTP at ``/mcp`` on the API's own app, behind the same API keys.

The endpoint authenticates each HTTP request like every route (``api.deps.get_caller``),
then hands it to the SDK's session manager; the tools read the caller from the request.
Sessions are stateless, so any ``pixelgate serve`` process behind a load balancer answers.
Without the ``mcp`` extra installed, nothing is mounted (``/mcp`` is a 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import FastAPI, Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pixelgate.api.deps import get_caller
from pixelgate.api.errors import error_response, status_for
from pixelgate.core.pipeline import Caller
from pixelgate.errors import AuthenticationFailed, PixelgateError
from pixelgate.runtime import Runtime

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

__all__ = ["MCP_PATH", "install_mcp"]

MCP_PATH = "/mcp"
CALLER_STATE = "pixelgate_caller"
TOOLS_MODULE = "pixelgate.integrations.mcp_tools"
#: how long the first MCP request waits for the SDK to load
READY_TIMEOUT_S = 30.0

log = structlog.get_logger("pixelgate.mcp")


def install_mcp(app: FastAPI) -> None:
    """Serve MCP at ``/mcp`` and run its session manager in the app's lifespan."""
    if importlib.util.find_spec("mcp") is None:
        return
    endpoint = McpEndpoint(app)
    app.router.routes.append(Route(MCP_PATH, endpoint, methods=["GET", "POST", "DELETE"]))
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with outer(app_) as state, endpoint.running():
            yield state

    app.router.lifespan_context = lifespan


class McpEndpoint:
    """The ASGI endpoint: bearer key → caller, then the SDK's streamable HTTP transport.

    The SDK (a couple of seconds of imports) is loaded by the first MCP request, not at
    start-up: a server that never sees an agent never pays for it.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.manager: StreamableHTTPSessionManager | None = None
        self._stop: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._stop = asyncio.Event()
        try:
            yield
        finally:
            stop, task = self._stop, self._task
            self._stop = self._task = self._ready = None
            stop.set()
            if task is not None:
                await task

    def _start(self, stop: asyncio.Event) -> asyncio.Event:
        if self._ready is None:  # no await since the check: one task, however many callers
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._serve(self._ready, stop), name="pixelgate-mcp")
        return self._ready

    async def _serve(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        # the session manager's task group lives in this one task, from start to stop
        try:
            tools = await asyncio.to_thread(importlib.import_module, TOOLS_MODULE)
            from mcp.server.transport_security import TransportSecuritySettings

            server = tools.build_mcp_server(self._resolve)  # fresh: a manager runs only once
            server.streamable_http_app(
                stateless_http=True,
                # the bearer key, not the Host or Origin, is what authenticates here
                transport_security=TransportSecuritySettings(
                    enable_dns_rebinding_protection=False
                ),
            )
            async with server.session_manager.run():
                self.manager = server.session_manager
                ready.set()
                await stop.wait()
        except Exception:
            log.exception("mcp_failed")
        finally:
            self.manager = None
            ready.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        stop = self._stop
        if stop is None:  # the app runs without its lifespan
            await self._unavailable(request, scope, receive, send)
            return
        try:
            caller = await get_caller(request)  # before loading anything for an anonymous call
        except PixelgateError as exc:
            status = status_for(exc)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            response = error_response(request, status, exc.code, exc.message, headers=headers)
            await response(scope, receive, send)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._start(stop).wait(), READY_TIMEOUT_S)
        manager = self.manager
        if manager is None:  # the SDK failed to load or start (logged)
            await self._unavailable(request, scope, receive, send)
            return
        scope.setdefault("state", {})[CALLER_STATE] = caller
        await manager.handle_request(scope, receive, send)

    @staticmethod
    async def _unavailable(request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(request, 503, "unavailable", "MCP is not running")
        await response(scope, receive, send)

    async def _resolve(self, ctx: Context) -> tuple[Runtime, Caller]:
        request = ctx.request_context.request
        caller = getattr(request, "scope", {}).get("state", {}).get(CALLER_STATE)
        if not isinstance(caller, Caller):
            raise AuthenticationFailed("no API key on this MCP request")
        runtime: Runtime = self.app.state.runtime
        return runtime, caller
