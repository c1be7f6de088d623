"""Routes built at the first request that may need them (the web UI's).

The web UI's modules (its pages, the operator's page, charts, forms) are ~1.2 MB resident
and ~40 ms of every start, for a process that may never render a page. :class:`LazyRoutes`
takes their place in the app's route list: a request whose path the UI may serve builds
them once, where ``app.include_router`` would have put them, and every later request is
matched against them in that same position (405s and 404s included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound, get_route_path
from starlette.types import Receive, Scope, Send

__all__ = ["LazyRoutes", "include_lazily"]

#: the scope key through which ``matches`` tells ``handle`` which route matched
_MATCHED = "pixelgate.lazy_route"


class LazyRoutes(BaseRoute):
    """Routes that ``build`` makes at the first request whose path ``claims`` accepts."""

    def __init__(self, build: Callable[[], list[BaseRoute]], claims: Callable[[str], bool]):
        self._build = build
        self._claims = claims
        self._routes: list[BaseRoute] | None = None

    @property
    def loaded(self) -> bool:
        return self._routes is not None

    @property
    def routes(self) -> list[BaseRoute]:
        if self._routes is None:
            self._routes = self._build()
        return self._routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] not in ("http", "websocket") or not self._claims(get_route_path(scope)):
            return Match.NONE, {}
        partial: tuple[Match, Scope] | None = None
        for route in self.routes:
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
    app: FastAPI, claims: Callable[[str], bool], include: Callable[[FastAPI], None]
) -> LazyRoutes:
    """Append to ``app`` a :class:`LazyRoutes` whose routes are those ``include(app)`` adds
    (called at the first claimed request, with the app's own router settings)."""

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

    lazy = LazyRoutes(build, claims)
    app.router.routes.append(lazy)
    return lazy
