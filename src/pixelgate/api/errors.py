"""Exceptions → HTTP responses, in the error shape of the route's family, with the request id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixelgate import errors as e
from pixelgate.api.responses import JSONResponse
from pixelgate.money import format_usd

__all__ = ["error_response", "install_error_handlers", "status_for"]

log = structlog.get_logger("pixelgate.api")

_STATUS: list[tuple[type[e.PixelgateError], int]] = [
    (e.ValidationFailed, 422),
    (e.AuthenticationFailed, 401),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.InsufficientCredits, 402),
    (e.BudgetExceeded, 402),
    (e.RateLimited, 429),
    (e.UnsafeURL, 422),
    (e.ImageRejected, 422),
    (e.Refused, 422),
    (e.InvalidRequest, 400),
    (e.ProviderRateLimited, 429),
    (e.ProviderTimeout, 504),
    (e.ProviderAuthError, 502),
    (e.ProviderError, 502),
    (e.ConfigError, 500),
    (e.StorageError, 500),
]

#: error codes of plain HTTP errors raised by the framework or a middleware
HTTP_CODES: dict[int, str] = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}

#: HTTP status for a generation's stored error code (sync routes answer with it)
CODE_STATUS: dict[str, int] = {
    "content_refused": 422,
    "provider_invalid_request": 400,
    "provider_rate_limited": 429,
    "provider_timeout": 504,
    "deadline_exceeded": 504,
    "provider_auth_failed": 502,
    "provider_unavailable": 502,
    "provider_error": 502,
    "no_provider": 502,
    "image_rejected": 502,
    "storage_error": 500,
    "internal_error": 500,
    "worker_lost": 500,
    "canceled": 409,
}


def status_for(exc: e.PixelgateError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def route_family(path: str) -> str:
    """Which error shape a path answers with: native, seed000, seed001, seed004 or openai."""
    if path == "/generate":
        return "seed000"
    if path.startswith("/images/"):
        return "seed001"
    if path.startswith("/api/"):
        return "seed004"
    if path.startswith("/v1/images/") and not path.startswith("/v1/images/img_"):
        return "openai"  # /v1/images/img_… are the native image routes
    return "native"


def openai_error_type(status: int) -> str:
    """OpenAI's error ``type`` vocabulary for an HTTP status."""
    if status >= 500:
        return "server_error"
    if status == 429:
        return "requests"
    if status == 402:
        return "insufficient_quota"
    return "invalid_request_error"


def error_body(
    family: str,
    code: str,
    message: str,
    request_id: str,
    *,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
    status: int = 400,
) -> dict[str, Any]:
    if family == "seed000":
        body: dict[str, Any] = {
            "success": False,
            "error": message,
            "code": code,
            "request_id": request_id,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    elif family in ("seed001", "seed004"):
        body = {"error": message, "code": code, "request_id": request_id}
        if family == "seed001":
            body["success"] = False
    elif family == "openai":
        body = {
            "error": {
                "message": message,
                "type": openai_error_type(status),
                "param": field,
                "code": code,
            }
        }
    else:
        body = {"error": {"code": code, "message": message, "request_id": request_id}}
        if field:
            body["error"]["field"] = field
    if extra:
        body.update(extra)
    return body


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    family = route_family(request.url.path)
    body = error_body(
        family, code, message, request_id_of(request), field=field, extra=extra, status=status
    )
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_status(request: Request) -> int:
    # the seed routes documented 400 for invalid input; the native API uses 422
    return 422 if route_family(request.url.path) in ("native",) else 400


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rate_limit_headers(limit: int, remaining: int, reset_at: float) -> dict[str, str]:
    """``X-RateLimit-*`` headers (reset as epoch seconds)."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(int(reset_at)),
    }


def _details(exc: e.PixelgateError) -> dict[str, Any]:
    """Machine-readable details of money and quota errors."""
    if isinstance(exc, e.InsufficientCredits):
        return {"balance": exc.balance, "price": exc.price}
    if isinstance(exc, e.BudgetExceeded):
        return {
            "budget_usd": format_usd(exc.budget),
            "spent_today_usd": format_usd(exc.spent),
            "estimate_usd": format_usd(exc.estimate),
            "resets_at": exc.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    if isinstance(exc, e.RateLimited):
        details: dict[str, Any] = {"retry_after": max(1, round(exc.retry_after))}
        if exc.limit is not None:
            details.update(limit=exc.limit, remaining=exc.remaining)
        if exc.reset_at is not None:
            details["reset_at"] = _iso(exc.reset_at)
        return details
    return {}


async def _pixelgate_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.PixelgateError)
    status = status_for(exc)
    family = route_family(request.url.path)
    headers: dict[str, str] = {}
    field = getattr(exc, "field", None)
    if isinstance(exc, e.ValidationFailed):
        status = _validation_status(request)
    if isinstance(exc, e.RateLimited | e.ProviderRateLimited) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, e.RateLimited) and exc.limit is not None and exc.reset_at is not None:
        headers.update(rate_limit_headers(exc.limit, exc.remaining, exc.reset_at))
    if status >= 500:
        log.error("request_failed", code=exc.code, message=exc.message,
                  request_id=request_id_of(request))
    details = _details(exc)
    if family == "seed004" and isinstance(exc, e.RateLimited):
        # seed 004's documented 429 body
        body: dict[str, Any] = {
            "error": exc.message,
            "remaining": exc.remaining,
            "resetTime": _iso(exc.reset_at) if exc.reset_at else None,
            "code": exc.code,
            "request_id": request_id_of(request),
        }
        return JSONResponse(body, status_code=status, headers=headers)
    body = error_body(
        family, exc.code, exc.message, request_id_of(request), field=field, status=status
    )
    if details:
        target = body["error"] if isinstance(body.get("error"), dict) else body
        target.update(details)
    return JSONResponse(body, status_code=status, headers=headers or None)


def _field_of(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) or "body"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    errors: Any = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid"}
    field = _field_of(first.get("loc", ()))
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        message = "field required"
    elif first.get("type") == "json_invalid":
        field, message = "body", "malformed JSON"
    return error_response(
        request,
        _validation_status(request),
        "invalid_request",
        f"{field}: {message}",
        field=field,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status, code, field = exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"), None
    if status == 413:
        field = "body"
    elif status == 400:
        # FastAPI's "error parsing the body" (not JSON, bad encoding): a validation error
        status, code, field = _validation_status(request), "invalid_request", "body"
    return error_response(
        request,
        status,
        code,
        str(exc.detail),
        field=field,
        headers=getattr(exc, "headers", None),
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled_error", request_id=request_id_of(request))
    return error_response(request, 500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.PixelgateError, _pixelgate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
