"""A bound on every request body, applied before anything reads or parses it.

Pure ASGI: a declared ``Content-Length`` over the limit is answered 413 at once, without
calling the application; a body sent without one (chunked) is counted as it streams and
the read fails with 413 as soon as it passes the limit. JSON and other bodies get
``max_body_bytes``; ``multipart/form-data`` (image uploads) the larger upload cap.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelgate.api.errors import error_body, route_family

__all__ = ["BodyLimitMiddleware", "BodyTooLarge"]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body: larger than {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_multipart_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_multipart_bytes = max_multipart_bytes

    def _limit(self, scope: Scope) -> tuple[int, int | None]:
        """The limit for this request and its declared length (None when not declared)."""
        limit, declared = self.max_body_bytes, None
        for name, value in scope["headers"]:
            if name == b"content-type" and value.lower().startswith(b"multipart/form-data"):
                limit = self.max_multipart_bytes
            elif name == b"content-length":
                text = value.decode("latin-1").strip()
                declared = int(text) if text.isdigit() else None
        return limit, declared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, declared = self._limit(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, send, limit)
            return
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, capped_receive, send)


async def _refuse(scope: Scope, send: Send, limit: int) -> None:
    request_id = str(scope.get("state", {}).get("request_id", ""))
    family = route_family(scope.get("path", ""))
    body = error_body(
        family,
        "payload_too_large",
        f"body: larger than {limit} bytes",
        request_id,
        field="body",
        status=413,
    )
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                # the unread body is still on the wire: this connection cannot be reused
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
