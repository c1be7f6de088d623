"""Jinja2 rendering, the UI's security headers and its HTML error pages."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from pixelgate.api.errors import error_response, request_id_of, status_for
from pixelgate.errors import PixelgateError, ValidationFailed
from pixelgate.money import format_usd

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = [
    "SECURITY_HEADERS",
    "LoginRequired",
    "UIRoute",
    "error_page",
    "render",
    "wants_json",
]

#: scripts and styles only from our own files: no inline script, no ``onclick=``
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob: https:; connect-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value.replace("T", " ").removesuffix("Z")[:19]
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _usd(value: Decimal | str | None) -> str:
    shown = format_usd(value)
    return "—" if shown is None else f"${shown}"


@functools.cache
def _env() -> Environment:
    # built at the first page, not at start: Jinja2 is ~1.8 MB and ~25 ms of every start,
    # and an API-only gateway never renders a page
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("pixelgate.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["usd"] = _usd
    return env


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
) -> HTMLResponse:
    """A page with the UI's security headers; ``user`` and ``csrf`` come from the context."""
    page = _env().get_template(template).render(
        {"request": request, "path": request.url.path, **(context or {})}
    )
    return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)


def error_page(
    request: Request, status: int, code: str, message: str, **context: Any
) -> HTMLResponse:
    return render(
        request,
        "error.html",
        {
            "status": status,
            "code": code,
            "message": message,
            "request_id": request_id_of(request),
            **context,
        },
        status=status,
    )


def wants_json(request: Request) -> bool:
    """The UI's own scripts ask for JSON; a browser navigating asks for HTML."""
    return "application/json" in request.headers.get("accept", "")


class LoginRequired(Exception):
    """No valid session: pages redirect to the sign-in page, scripts get a 401."""


class UIRoute(APIRoute):
    """A UI route: our errors become an HTML page (JSON for the UI's scripts, as in the API)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                if wants_json(request):
                    return error_response(request, 401, "unauthorized", "sign in first")
                return RedirectResponse("/ui/login", status_code=303, headers=SECURITY_HEADERS)
            except PixelgateError as exc:
                if wants_json(request):
                    raise
                status = 422 if isinstance(exc, ValidationFailed) else status_for(exc)
                return error_page(request, status, exc.code, exc.message)

        return handle
