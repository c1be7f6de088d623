"""Where shared counters live: process memory (embedded) or Redis (scale-out).

One place decides, from ``PIXELGATE_REDIS_URL`` (:func:`shared_state_backend`), so every
limiter, gate and breaker of the routing and money code shares its state across API and
worker processes in a scale-out deployment and stays in-process otherwise::

    from limits.aio.strategies import MovingWindowRateLimiter
    limiter = MovingWindowRateLimiter(open_limits_storage(settings))

:func:`open_redis` makes the one Redis client of a process (a bounded connection pool,
no retries); the bus, the ``limits`` storage, the breakers, gates and pauses all use it
(``shared.py`` builds them). ``limits`` talks to Redis through redis-py here
(``implementation="redispy"``: the ``coredis`` default is not a dependency of pixelgate)
and namespaces its keys under ``{redis_prefix}:limits`` so several deployments can share
one Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from limits.aio.storage import Storage
    from redis.asyncio import Redis

    from pixelgate.config import Settings

__all__ = [
    "MEMORY_URI",
    "limits_storage_options",
    "limits_storage_uri",
    "open_limits_storage",
    "open_redis",
    "shared_state_backend",
]

MEMORY_URI = "async+memory://"
#: connections per process: pub/sub readers hold one each, commands take one briefly
POOL_SIZE = 32
#: waiting for a free connection of the pool, and for a reply
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
_REDIS_SCHEMES = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis"}


def shared_state_backend(settings: Settings) -> str:
    """``"redis"`` when counters are shared across processes, else ``"memory"``."""
    return "redis" if settings.redis_url else "memory"


def limits_storage_uri(settings: Settings) -> str:
    """The ``limits`` storage URI: ``async+memory://`` or ``async+redis://host:port/db``."""
    if not settings.redis_url:
        return MEMORY_URI
    scheme, sep, rest = settings.redis_url.partition("://")
    if not sep or scheme not in _REDIS_SCHEMES:
        from pixelgate.errors import ConfigError

        raise ConfigError(f"config error: redis_url: unsupported scheme {scheme!r}")
    if scheme == "unix":
        return f"async+redis+unix://{rest}"
    return f"{_REDIS_SCHEMES[scheme]}://{rest}"


def limits_storage_options(settings: Settings) -> dict[str, Any]:
    """Keyword options for :func:`limits.storage.storage_from_string` with that URI."""
    if not settings.redis_url:
        return {}
    return {"implementation": "redispy", "key_prefix": f"{settings.redis_prefix}:limits"}


def open_limits_storage(settings: Settings, *, redis: Redis | None = None) -> Storage:
    """A ready ``limits.aio`` storage for this deployment (on ``redis``'s pool when given).

    Storage errors are wrapped in ``limits.errors.StorageError``.
    """
    from limits.storage import storage_from_string

    options = limits_storage_options(settings)
    if redis is not None and settings.redis_url:
        options["connection_pool"] = redis.connection_pool
    storage = storage_from_string(limits_storage_uri(settings), wrap_exceptions=True, **options)
    return storage  # type: ignore[return-value]


def open_redis(url: str) -> Redis:
    """The Redis client of a process: a bounded pool, short timeouts, no retries.

    A command is never resent: a script whose reply was lost must not run twice (a
    breaker call counted twice, a probe slot taken twice). The callers decide what a
    failure means (the shared state fails open, the bus falls back to polling).
    """
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=SOCKET_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)
