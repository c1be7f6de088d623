"""Hot routes: the usual request of a hot endpoint answered without FastAPI's handling.

FastAPI's per-request work around an endpoint (a ``Request``, the body's content-type
sniffing, resolving each dependency and parameter by introspected signature, the
exception wrapper) was ~16 % of a sync generation's CPU (``py-spy --gil``, native route,
64 connections). A :class:`HotRoute` keeps everything else of the route: it is matched,
documented in OpenAPI and guarded by the middleware like any other; only its
``handle`` first tries a hand-written path for the *usual* request — a JSON body with
no query string, each header it reads given once, a valid bearer key, no dependency
overrides — and calls the route's ``fast`` function with what the dependencies would
have given (runtime, caller, request id, idempotency key) and the body's bytes.

Anything unusual is not answered here: the request (its body replayed) goes to FastAPI's
own handling of the route, which answers it exactly as before, same errors in the same
order. ``fast`` may also decline, by raising :class:`Unusual` before it has done
anything (a body that does not validate: FastAPI's answer is the 422 users know).
Errors ``fast`` raises later reach the same exception handlers as the endpoint's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelgate.api.deps import (
    MAX_IDEMPOTENCY_KEY,
    KeyCache,
    cached_caller,
    usable_idempotency_key,
)
from pixelgate.api.text import SUSPECT_MARKERS
from pixelgate.core.keys import hash_key
from pixelgate.core.pipeline import Caller
from pixelgate.runtime import Runtime

__all__ = [
    "DECLINED",
    "Declined",
    "FastEndpoint",
    "HotPathMiddleware",
    "HotRequest",
    "HotRoute",
    "Unusual",
    "hot_route",
]

#: the scope key of a hot request the middleware left to FastAPI
DECLINED = "pixelgate.hot_declined"

#: headers read on the hot path: each must come at most once (else FastAPI answers)
_AUTHORIZATION = b"authorization"
_CONTENT_TYPE = b"content-type"
_IDEMPOTENCY_KEY = b"idempotency-key"


class Unusual(Exception):
    """Raised by a fast endpoint before it acts: FastAPI's handling answers instead."""


@dataclass(frozen=True, slots=True)
class HotRequest:
    """What a fast endpoint gets: the dependencies' values and the body's bytes."""

    runtime: Runtime
    caller: Caller
    request_id: str
    idempotency_key: str | None
    #: the headers the route reads (never the key: the caller stands for it)
    headers: dict[bytes, bytes]
    body: bytes

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


FastEndpoint = Callable[[HotRequest], Awaitable[Response]]


class HotRoute(APIRoute):
    """An :class:`APIRoute` whose usual requests its ``fast`` function answers."""

    fast: FastEndpoint
    #: the headers ``fast`` reads besides authorization and the idempotency key
    reads: frozenset[bytes] = frozenset()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get(DECLINED):  # HotPathMiddleware tried already: FastAPI answers
            await super().handle(scope, receive, send)
            return
        outcome = await self.answer_usual(scope, receive)
        if isinstance(outcome, Declined):
            await super().handle(scope, outcome.replay(receive), send)
            return
        await outcome(scope, receive, send)

    async def answer_usual(self, scope: Scope, receive: Receive) -> Response | Declined:
        """The fast function's response to a usual request, or :class:`Declined` with
        what was read of the request. Errors the fast function raises propagate."""
        if scope["method"] not in (self.methods or ()) or scope["query_string"]:
            return Declined(())
        app = scope["app"]
        headers = _usual_headers(scope["headers"], self.reads)
        caller = None if headers is None else await _caller(app.state, headers)
        if headers is None or caller is None or app.dependency_overrides:
            return Declined(())
        read = await _read_body(receive)
        body = b"".join(m.get("body", b"") for m in read)
        idempotency_key = _idempotency_key(headers.get(_IDEMPOTENCY_KEY))
        usual = read[-1]["type"] == "http.request" and idempotency_key is not False
        if not usual or any(marker in body for marker in SUSPECT_MARKERS):
            return Declined(read)
        request = HotRequest(
            runtime=app.state.runtime,
            caller=caller,
            request_id=str(scope.get("state", {}).get("request_id", "")),
            idempotency_key=cast("str | None", idempotency_key),
            headers={name: value for name, value in headers.items() if name != _AUTHORIZATION},
            body=body,
        )
        try:
            return await type(self).fast(request)
        except Unusual:
            return Declined(read)


@dataclass(frozen=True, slots=True)
class Declined:
    """A request the hot path leaves to FastAPI: the messages it read of it already."""

    read: Sequence[Message]

    def replay(self, receive: Receive) -> Receive:
        """A ``receive`` that gives the messages already read, then the connection's own."""
        if not self.read:
            return receive
        pending = list(self.read)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        return replay


class HotPathMiddleware:
    """The hot routes' usual requests answered right below the middleware they need
    (metrics, request id, body limit) and above the layers they do not: the ``Allow``
    handling, FastAPI's exit stack and routing (matching a path against every route,
    four router layers), ~4 % of a request's CPU (py-spy, native route). A request is
    a hot one by its exact path and ``POST``; the route's :meth:`HotRoute.answer_usual`
    decides whether it is usual. What it declines goes down the whole stack, its body
    replayed and marked, so the route leaves it to FastAPI at once; an error the fast
    function raises reaches the app's exception handlers, as from the endpoint.
    """

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.hot = {
            route.path: route
            for route in routes
            if isinstance(route, HotRoute) and "POST" in (route.methods or ())
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = self.hot.get(scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            outcome = await route.answer_usual(scope, receive)
        except Exception as exc:
            scope["route"] = route
            await _handled(exc, scope, receive, send)
            return
        if isinstance(outcome, Declined):
            scope[DECLINED] = True
            await self.app(scope, outcome.replay(receive), send)
            return
        scope["route"] = route  # as routing sets it: the metrics count answers by it
        await outcome(scope, receive, send)


async def _handled(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``exc`` with the app's handler for it, as the ``ExceptionMiddleware`` of the
    stack would (FastAPI gives it every handler but the 500/``Exception`` one, which the
    outer ``ServerErrorMiddleware`` keeps); with no handler it propagates."""
    app = scope["app"]
    handlers = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}

    async def raising(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    await ExceptionMiddleware(raising, handlers=handlers, debug=app.debug)(scope, receive, send)


def hot_route(fast: FastEndpoint, *, reads: tuple[str, ...] = ()) -> type[HotRoute]:
    """The route class for ``router.add_api_route(..., route_class_override=...)``."""
    names = frozenset(name.lower().encode("latin-1") for name in reads)
    return type(
        f"HotRoute_{fast.__name__}", (HotRoute,), {"fast": staticmethod(fast), "reads": names}
    )


def _usual_headers(
    raw: list[tuple[bytes, bytes]], reads: frozenset[bytes]
) -> dict[bytes, bytes] | None:
    """The headers the hot path reads, or None when one is repeated or the body is not JSON."""
    found: dict[bytes, bytes] = {}
    for name, value in raw:
        if name in (_AUTHORIZATION, _CONTENT_TYPE, _IDEMPOTENCY_KEY) or name in reads:
            if name in found:
                return None
            found[name] = value
    media_type = found.get(_CONTENT_TYPE, b"").partition(b";")[0].strip().lower()
    return found if media_type == b"application/json" else None


async def _caller(state: Any, headers: dict[bytes, bytes]) -> Caller | None:
    scheme, _, token = headers.get(_AUTHORIZATION, b"").decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    runtime: Runtime = state.runtime
    return await cached_caller(cast(KeyCache, state.key_cache), runtime, hash_key(token))


def _idempotency_key(raw: bytes | None) -> str | bool | None:
    """The key, None when absent, False when FastAPI should judge it (it refuses it)."""
    if raw is None:
        return None
    value = raw.decode("latin-1")
    if len(value) > MAX_IDEMPOTENCY_KEY:
        return False
    key = usable_idempotency_key(value)
    return False if key is None else key


async def _read_body(receive: Receive) -> list[Message]:
    """The body's messages, up to the last one or a disconnect (then the last message)."""
    read: list[Message] = []
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return read
