"""The API's routers, in the order FastAPI tries them, each with the paths it can serve.

Every router of the table sits in the app's route list behind a :class:`LazyRoutes`
holder that only looks at requests whose path starts with one of the router's prefixes:
a request for ``/health`` no longer makes FastAPI build the per-route state of the
generation and OpenAI routers tried before it, and a hot request skips the other
routers' path checks. The routers marked ``lazy`` (administration, the seed services'
compatible APIs and the rarely used resources) are not even imported until a request
they may serve, an ``OPTIONS``/``405`` on such a path, the OpenAPI document or a listing
of the app's routes needs them: 55-80 ms and 18 modules of every ``pixelgate serve`` start
(docs/benchmarks.md, "Start, seventh round"). Their answers, the document and the route
list are the same as when every router was included at once (tests/unit/test_route_table.py).

A router's prefixes must cover every path its routes can match: each route's path up to
its first parameter starts with one of them (a test checks it for every router).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from fastapi import APIRouter
from starlette.routing import BaseRoute

__all__ = ["ROUTE_MODULES", "RouteModule", "eager_routes", "routes_for"]


class RouteModule:
    """A module whose ``router`` the app includes, and the paths that router can serve.

    (A plain class: a dataclass costs ~1 ms of every start to create.)
    """

    __slots__ = ("lazy", "name", "prefixes")

    def __init__(self, name: str, prefixes: tuple[str, ...], *, lazy: bool = False) -> None:
        self.name = name
        self.prefixes = prefixes
        #: imported at the first request it may serve (or the first listing), not at start
        self.lazy = lazy

    def __repr__(self) -> str:
        return f"RouteModule({self.name!r}, {self.prefixes!r}, lazy={self.lazy})"

    def claims(self, path: str) -> bool:
        """Whether a route of this router could match ``path``."""
        return path.startswith(self.prefixes)

    def router(self) -> APIRouter:
        """The module's router (importing the module, and declaring its routes, once)."""
        router: APIRouter = importlib.import_module(self.name).router
        return router


_ROUTES = "pixelgate.api.routes."
_COMPAT = "pixelgate.api.compat."

#: FastAPI tries them in this order (each try costs): the hot routes first
ROUTE_MODULES = (
    RouteModule(_ROUTES + "generations", ("/v1/generations",)),
    RouteModule(_COMPAT + "openai", ("/v1/images/",)),
    RouteModule(_ROUTES + "health", ("/health",)),
    RouteModule(_ROUTES + "providers", ("/v1/providers", "/api/health/providers")),
    RouteModule(_ROUTES + "files", ("/files/",)),
    RouteModule(_COMPAT + "seed000", ("/generate",), lazy=True),
    RouteModule(_COMPAT + "seed001", ("/images/generate",), lazy=True),
    RouteModule(_COMPAT + "seed004", ("/api/generate",), lazy=True),
    RouteModule(_ROUTES + "account", ("/v1/estimate", "/v1/account", "/v1/usage"), lazy=True),
    RouteModule(_ROUTES + "admin_accounts", ("/admin/accounts", "/admin/keys"), lazy=True),
    RouteModule(_ROUTES + "admin_reports", ("/admin/stats",), lazy=True),
    RouteModule(_ROUTES + "admin_storage", ("/admin/storage",), lazy=True),
    RouteModule(_ROUTES + "edits", ("/v1/generations/edits",), lazy=True),
    RouteModule(_ROUTES + "webhooks", ("/v1/webhooks",), lazy=True),
    RouteModule(
        _ROUTES + "admin_routing",
        (
            "/admin/config",
            "/admin/circuit-breaker",
            "/admin/providers",
            "/admin/status",
            "/admin/accounts/",
        ),
        lazy=True,
    ),
    RouteModule(_ROUTES + "config", ("/config",), lazy=True),
    RouteModule(_ROUTES + "batches", ("/v1/batches",), lazy=True),
    RouteModule(_ROUTES + "templates", ("/v1/templates",), lazy=True),
    RouteModule(_ROUTES + "images", ("/v1/images/", "/v1/generations/"), lazy=True),
    RouteModule(_ROUTES + "ws", ("/v1/events/tickets",)),
    RouteModule(_ROUTES + "metrics", ("/metrics",), lazy=True),
    RouteModule(_ROUTES + "alerts", ("/admin/alerts",), lazy=True),
)


def routes_for(path: str) -> Iterator[BaseRoute]:
    """The table's routes (as declared, before inclusion) that could match ``path``."""
    for module in ROUTE_MODULES:
        if module.claims(path):
            yield from module.router().routes


def eager_routes() -> list[BaseRoute]:
    """The routes (as declared) of the routers included at once: the hot routes are among
    them (a test checks that no lazy router has one)."""
    return [
        route for module in ROUTE_MODULES if not module.lazy for route in module.router().routes
    ]
