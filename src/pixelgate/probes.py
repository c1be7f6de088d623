"""Checks of the services a deployment depends on, each failure said in one line.

``/health`` and the start-up of ``serve`` and ``worker`` use them: "cannot connect to
127.0.0.1:5432 (connection refused)", "credentials refused", "bucket 'images' does not
exist", "plain HTTP endpoint refused: set PIXELGATE_S3_ALLOW_HTTP=true" — each followed by
the setting to look at — instead of an exception's class name.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pixelgate.errors import DependencyDown

if TYPE_CHECKING:
    from pixelgate.config import Settings
    from pixelgate.runtime import Runtime

__all__ = [
    "CHECK_TIMEOUT_S",
    "Dependency",
    "check_all",
    "database_down",
    "dependencies",
    "explain",
]

CHECK_TIMEOUT_S = 3.0
MAX_DETAIL = 200

_REFUSED = re.compile(
    r"connection refused|connect call failed|error 111 |error sending request|"
    r"network is unreachable|no route to host|cannot connect",
    re.I,
)
_DNS = re.compile(
    r"name or service not known|temporary failure in name resolution|nodename nor servname|"
    r"getaddrinfo failed|dns error|failed to lookup address",
    re.I,
)
_AUTH = re.compile(
    r"password authentication failed|invalidpassword|wrongpass|noauth|authentication required|"
    r"invalid username-password|invalidaccesskeyid|signaturedoesnotmatch|accessdenied|"
    r"403 forbidden|status code: 403|invalid_client|role .* does not exist",
    re.I,
)
_NO_DATABASE = re.compile(r'database "([^"]+)" does not exist', re.I)
_NO_BUCKET = re.compile(r"nosuchbucket|404 not found|status code: 404", re.I)


@dataclass(frozen=True)
class Service:
    """A service this process uses: its name in ``/health``, where it is, and the setting
    that points at it (what a one-line explanation of its failure names)."""

    name: str
    target: str
    setting: str


@dataclass(frozen=True)
class Dependency(Service):
    """A :class:`Service` and its health check."""

    check: Callable[[], Awaitable[dict[str, Any]]]


def explain(exc: BaseException, dep: Service) -> str:
    """Why ``dep`` is down, in one line ending with the setting to look at."""
    texts = [f"{type(e).__name__}: {e}" for e in _chain(exc)]
    joined = " | ".join(texts)
    where = dep.target
    if isinstance(exc, TimeoutError) and not str(exc):
        reason = f"no answer from {where} within {CHECK_TIMEOUT_S:g} s"
    elif any(isinstance(e, socket.gaierror) for e in _chain(exc)) or _DNS.search(joined):
        reason = f"cannot resolve the host of {where}"
    elif _AUTH.search(joined) or any("Authentication" in type(e).__name__ for e in _chain(exc)):
        reason = f"credentials refused by {where}"
    elif (m := _NO_DATABASE.search(joined)) is not None:
        reason = f"database {m.group(1)!r} does not exist on {where}"
    elif dep.name == "storage" and _NO_BUCKET.search(joined):
        reason = f"bucket of {where} does not exist (create it)"
    elif any(isinstance(e, ConnectionRefusedError) for e in _chain(exc)) or _REFUSED.search(
        joined
    ):
        reason = f"cannot connect to {where} (connection refused or host unreachable)"
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"{where}: {first[:MAX_DETAIL]}"
    return f"{reason} ({dep.setting})"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        orig = getattr(e, "orig", None)  # SQLAlchemy wraps the driver's error
        todo += [e.__cause__, e.__context__, orig if isinstance(orig, BaseException) else None]


def _host_of(url: str, default_port: int | None = None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    return f"{host}:{port}" if port else host


def database_target(settings: Settings) -> str:
    """Where the database is, without credentials."""
    if settings.is_sqlite:
        return "the SQLite file in " + str(settings.data_dir)
    return "PostgreSQL at " + _host_of(settings.resolved_database_url, 5432)


def database_down(settings: Settings, exc: BaseException) -> DependencyDown:
    """The one-line error of a database that cannot be reached at start-up."""
    dep = Service("database", database_target(settings), "PIXELGATE_DATABASE_URL")
    return DependencyDown(f"database down: {explain(exc, dep)}")


def dependencies(runtime: Runtime) -> list[Dependency]:
    """The services this process uses (Redis only in a scale-out deployment)."""
    settings = runtime.settings
    deps = [
        Dependency(
            "database", database_target(settings), "PIXELGATE_DATABASE_URL", lambda: _db(runtime)
        ),
        Dependency(
            "storage", _storage_target(settings), _storage_setting(settings),
            lambda: _storage(runtime),
        ),
        Dependency("queue", "the queue tables", "PIXELGATE_DATABASE_URL", lambda: _queue(runtime)),
    ]
    if settings.redis_url:
        deps.append(
            Dependency(
                "redis", "Redis at " + _host_of(settings.redis_url, 6379), "PIXELGATE_REDIS_URL",
                lambda: _redis(runtime),
            )
        )
    return deps


async def check_all(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Every dependency's check, concurrently, each bounded by :data:`CHECK_TIMEOUT_S`."""
    deps = dependencies(runtime)
    results = await asyncio.gather(*(_checked(d) for d in deps))
    return {d.name: r for d, r in zip(deps, results, strict=True)}


async def _checked(dep: Dependency) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await dep.check()
    except Exception as exc:
        return {"status": "down", "error": type(exc).__name__, "reason": explain(exc, dep)}


def _storage_target(settings: Settings) -> str:
    url = settings.resolved_storage_url
    if not url.startswith("s3://"):
        return "the image directory " + url.removeprefix("file://")
    endpoint = settings.storage_s3.endpoint_url or "AWS S3"
    return f"{url} at {endpoint}"


def _storage_setting(settings: Settings) -> str:
    if settings.resolved_storage_url.startswith("s3://"):
        return "PIXELGATE_STORAGE_URL, AWS_ENDPOINT_URL and the AWS_* credentials"
    return "PIXELGATE_STORAGE_URL"


async def _db(runtime: Runtime) -> dict[str, Any]:
    await runtime.db.ping()
    return {"status": "ok", "backend": runtime.db.dialect}


async def _storage(runtime: Runtime) -> dict[str, Any]:
    check = getattr(runtime.storage, "check", None)
    if check is not None:
        await check()
    else:
        await runtime.storage.exists("health/probe")
    return {"status": "ok", "backend": runtime.storage.backend}


async def _queue(runtime: Runtime) -> dict[str, Any]:
    body = await runtime.queue.health()
    worker = runtime.worker
    body["worker"] = "running" if worker else "disabled"
    body["in_flight"] = worker.in_flight if worker else 0
    return body


async def _redis(runtime: Runtime) -> dict[str, Any]:
    ping = getattr(runtime.bus, "ping", None)
    if ping is None:
        return {"status": "ok", "used_for": "nothing (in-process bus)"}
    await ping()
    return {"status": "ok"}
