"""What the OpenAPI document promises besides the happy path: the error responses every
operation can give (in its family's shape), and ``OPTIONS``/``405`` answers with ``Allow``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import BaseRoute, Match, get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from pixelgate.api.deps import get_admin, get_caller
from pixelgate.api.errors import route_family

__all__ = ["AllowMiddleware", "ErrorBody", "document_errors"]


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine code (docs/api.md lists them)")
    message: str
    request_id: str
    field: str | None = Field(None, description="the request field at fault, when one is")


class ErrorBody(BaseModel):
    """Every native error: ``{"error": {"code", "message", "request_id"}}``."""

    model_config = ConfigDict(extra="allow")

    error: ErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, requests, insufficient_quota…")
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error shape (``/v1/images/…``)."""

    error: OpenAIErrorDetail


class SeedErrorBody(BaseModel):
    """The seed services' flat error shape (``/generate``, ``/images/…``, ``/api/…``)."""

    model_config = ConfigDict(extra="allow")

    error: str
    code: str
    request_id: str
    success: bool | None = None


_MODELS: dict[str, type[BaseModel]] = {
    "native": ErrorBody,
    "openai": OpenAIErrorBody,
    "seed000": SeedErrorBody,
    "seed001": SeedErrorBody,
    "seed004": SeedErrorBody,
}
_DESCRIPTIONS = {
    400: "Invalid request",
    401: "Missing or unknown API key",
    402: "Not enough credits, or over the daily budget",
    403: "The key may not do this (admin only)",
    404: "Not found (or another account's)",
    409: "Conflicts with the resource's state",
    413: "Body over max_body_bytes (payload_too_large)",
    422: "Invalid request; the error names the field",
    429: "Rate limited; see Retry-After",
    500: "Internal error",
    502: "The provider failed",
    504: "No result within the deadline",
}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _uses(dependant: Dependant, fn: Any) -> bool:
    return any(d.call is fn or _uses(d, fn) for d in dependant.dependencies)


def _statuses(route: APIRoute, family: str) -> set[int]:
    statuses = {404, 500, 422 if family == "native" else 400}
    if _uses(route.dependant, get_caller):
        statuses |= {401, 403, 429}
    if _uses(route.dependant, get_admin):
        statuses.add(403)
    methods = route.methods or set()
    if methods & _BODY_METHODS:
        statuses |= {409, 413}
    if methods & {"DELETE", "PATCH"}:
        statuses.add(409)
    if ("POST" in methods and family != "native") or route.path.startswith("/v1/generations"):
        statuses |= {402, 409, 422, 429, 502, 504}
    if family == "seed000":
        statuses |= {400, 429, 500, 502, 504}
    return statuses


def document_errors(routes: Iterable[BaseRoute]) -> None:
    """Add every error response an operation can give, with its family's schema.

    Run on the routers' routes before they are included in the app.
    """
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        family = route_family(route.path)
        model = _MODELS[family]
        for status in sorted(_statuses(route, family) | set(route.responses)):
            if not isinstance(status, int) or status < 400:
                continue
            declared = route.responses.setdefault(status, {})
            declared.setdefault("model", model)
            declared.setdefault("description", _DESCRIPTIONS.get(status, "Error"))


class AllowMiddleware:
    """``OPTIONS`` answers 204 with ``Allow``; a 405 lists every method of the path.

    Starlette stops at the first route whose path matches, so with a ``GET`` and a
    ``POST`` route on one path a 405 would name only one of them.
    """

    def __init__(self, app: ASGIApp, *, routes: Callable[[str], Iterable[BaseRoute]]) -> None:
        self.app = app
        #: the routes that could match a path (``route_table.routes_for``)
        self.routes = routes

    def _allow_header(self, scope: Scope) -> bytes | None:
        # a literal path (/v1/images/edits) hides templated ones (/v1/images/{image_id})
        literal: set[str] = set()
        templated: set[str] = set()
        for route in self.routes(get_route_path(scope)):
            route_methods = getattr(route, "methods", None)
            if route_methods:
                match, _ = route.matches(scope)
                if match in (Match.FULL, Match.PARTIAL):
                    target = templated if getattr(route, "param_convertors", None) else literal
                    target |= set(route_methods)
        methods = literal or templated
        return ", ".join(sorted(methods | {"OPTIONS"})).encode() if methods else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            allow = self._allow_header(scope)
            if allow is not None:
                await send(
                    {"type": "http.response.start", "status": 204, "headers": [(b"allow", allow)]}
                )
                await send({"type": "http.response.body", "body": b""})
                return

        async def send_with_allow(message: Any) -> None:
            # only a 405 pays for the look-up; other answers pass straight through
            if message["type"] == "http.response.start" and message["status"] == 405:
                allow = self._allow_header(scope)
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                if allow is not None:
                    headers.append((b"allow", allow))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_allow)
