"""The separate metrics server: ``GET /metrics`` without auth on ``metrics_bind``.

Meant for a scraper on a private network: it answers nothing but the metrics, on its own
address, so the API port can stay public while the metrics need no key. It runs in the
process's event loop (``pixelgate serve`` and ``pixelgate worker`` start it when
``metrics_bind`` is set), served by uvicorn like the API.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pixelgate.errors import ConfigError
from pixelgate.observability.collector import CONTENT_TYPE, exposition

if TYPE_CHECKING:
    from pixelgate.runtime import Runtime

__all__ = ["MetricsServer", "parse_bind"]

log = structlog.get_logger("pixelgate.metrics")

START_TIMEOUT_S = 10.0


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) → host and port."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"config error: metrics_bind: {bind!r} is not host:port")
    return host, int(port)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the main server or the worker owns those."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class MetricsServer:
    """A second, small HTTP server answering ``GET /metrics`` for one runtime."""

    def __init__(self, runtime: Runtime, bind: str) -> None:
        self.runtime = runtime
        self.host, self.port = parse_bind(bind)

        async def metrics(_request: Request) -> Response:
            return Response(await exposition(runtime), media_type=CONTENT_TYPE)

        app = Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_config=None, access_log=False, lifespan="off"
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def bound_port(self) -> int:
        """The port listened on (the real one when ``metrics_bind`` said port 0)."""
        if self._sock is not None:
            return int(self._sock.getsockname()[1])
        return self.port

    async def start(self) -> None:
        # the socket is bound here, so a taken port is a clear error (uvicorn would exit)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"config error: metrics_bind: cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or exc}"
            ) from None
        self._sock = sock
        self._task = asyncio.create_task(self.server.serve([sock]), name="pixelgate-metrics")
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while not self.server.started:
            if self._task.done():
                raise ConfigError("config error: metrics_bind: the metrics server stopped")
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigError("config error: metrics_bind: the metrics server did not start")
            await asyncio.sleep(0.01)
        log.info("metrics_server_started", host=self.host, port=self.bound_port)

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
