"""HTTP metrics (and the request span) as a pure ASGI middleware.

Labelled by the matched route's template (``/v1/generations/{generation_id}``), never
the raw path: a path full of ids would make one time series per request. Requests no
route matched are ``unmatched``. The duration runs until the response starts, so an
event stream counts its set-up, not its hours of streaming.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelgate.observability import tracing
from pixelgate.observability.metrics import HTTP_DURATION, HTTP_REQUESTS, labelled

__all__ = ["UNMATCHED", "MetricsMiddleware"]

UNMATCHED = "unmatched"
#: any other method (a fuzzer's invention) is "other": label values stay few
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Counts and times every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if tracing.enabled():
            await self._traced(scope, receive, send)
            return
        start = time.perf_counter()
        answer = [500, 0.0]

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer[0] = message["status"]
                answer[1] = time.perf_counter() - start
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            _record(scope, int(answer[0]), answer[1] or time.perf_counter() - start)

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        answer = [500, 0.0]

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer[0] = message["status"]
                answer[1] = time.perf_counter() - start
            await send(message)

        with tracing.request_span(scope["method"], scope["path"], scope["headers"]) as span:
            try:
                await self.app(scope, receive, timed_send)
            finally:
                route = _route(scope)
                if span is not None:
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", int(answer[0]))
                    request_id = scope.get("state", {}).get("request_id")
                    if request_id:
                        span.set_attribute("pixelgate.request_id", request_id)
                _record(scope, int(answer[0]), answer[1] or time.perf_counter() - start)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


def _record(scope: Scope, status: int, seconds: float) -> None:
    method = scope["method"] if scope["method"] in METHODS else "other"
    labels = (_route(scope), method, str(status))
    labelled(HTTP_REQUESTS, *labels).inc()
    labelled(HTTP_DURATION, *labels).observe(seconds)
