"""Routes built at the first request that may need them (the web UI's, the rarely used
API routers of :mod:`pixelgate.api.route_table`).

The web UI's modules (its pages, the operator's page, charts, forms) are ~1.2 MB resident
and ~40 ms of every start, for a process that may never render a page. :class:`LazyRoutes`
takes their place in the app's route list: a request whose path the UI may serve builds
them once, where ``app.include_router`` would have put them, and every later request is
matched against them in that same position (405s and 404s included).

A *listed* holder's routes are part of the app's route list as
:class:`LazyRoutingFastAPI` shows it (``app.routes``: what the OpenAPI document and any
listing read), built for it if need be, in the holder's place. The UI's holder is not
listed: its routes are not in the document, and a listing does not load the UI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound, get_route_path
from starlette.types import Receive, Scope, Send

__all__ = ["LazyRoutes", "LazyRoutingFastAPI", "include_lazily", "listed_routes"]

#: the scope key through which ``matches`` tells ``handle`` which route matched
_MATCHED = "pixelgate.lazy_route"


class LazyRoutes(BaseRoute):
    """Routes that ``build`` makes at the first request whose path ``claims`` accepts."""

    def __init__(
        self,
        build: Callable[[], list[BaseRoute]],
        claims: Callable[[str], bool],
        *,
        listed: bool = False,
    ):
        self._build = build
        self._claims = claims
        self._routes: list[BaseRoute] | None = None
        self._lock = threading.Lock()
        #: whether ``app.routes`` shows these routes in the holder's place
        self.listed = listed

    @property
    def loaded(self) -> bool:
        return self._routes is not None

    @property
    def routes(self) -> list[BaseRoute]:
        if self._routes is None:
            with self._lock:  # built once, should a thread list the routes meanwhile
                if self._routes is None:
                    self._routes = self._build()
        return self._routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] not in ("http", "websocket") or not self._claims(get_route_path(scope)):
            return Match.NONE, {}
        routes = self._routes if self._routes is not None else self.routes
        partial: tuple[Match, Scope] | None = None
        for route in routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return match, {**child, _MATCHED: route}
            if match is Match.PARTIAL and partial is None:
                partial = match, {**child, _MATCHED: route}
        return partial or (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope[_MATCHED].handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)


def include_lazily(
    app: FastAPI,
    claims: Callable[[str], bool],
    include: Callable[[FastAPI], None],
    *,
    listed: bool = False,
    now: bool = False,
) -> LazyRoutes:
    """Append to ``app`` a :class:`LazyRoutes` whose routes are those ``include(app)`` adds
    (called at the first claimed request, with the app's own router settings, or at once
    with ``now``: the holder then only keeps other paths' requests away from them)."""

    def build() -> list[BaseRoute]:
        # include_router gives the routes the app router's settings (response class,
        # dependency overrides, unique ids); they are then moved into this holder. Route
        # matching is synchronous: nothing runs on this loop between the two steps.
        routes = app.router.routes
        start = len(routes)
        include(app)
        built = routes[start:]
        del routes[start:]
        return built

    lazy = LazyRoutes(build, claims, listed=listed)
    app.router.routes.append(lazy)
    if now:
        lazy.routes  # noqa: B018 - builds them
    return lazy


def listed_routes(routes: list[BaseRoute]) -> list[BaseRoute]:
    """``routes`` with each listed holder replaced by its routes (built if need be)."""
    if not any(isinstance(r, LazyRoutes) and r.listed for r in routes):
        return routes
    out: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, LazyRoutes) and route.listed:
            out.extend(route.routes)
        else:
            out.append(route)
    return out


class LazyRoutingFastAPI(FastAPI):
    """A FastAPI app whose ``routes`` show its listed holders' routes in their places, as
    if they had been included at once (FastAPI's OpenAPI document is made from them)."""

    @property
    def routes(self) -> list[BaseRoute]:
        return listed_routes(self.router.routes)
