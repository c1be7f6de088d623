"""Where shared counters live: process memory (embedded) or Redis (scale-out).

One place decides, from ``PIXELGATE_REDIS_URL``, so every limiter of the routing and
money code shares its windows across API and worker processes in a scale-out
deployment and stays in-process otherwise::

    from limits.aio.strategies import MovingWindowRateLimiter
    limiter = MovingWindowRateLimiter(open_limits_storage(settings))

``limits`` talks to Redis through redis-py here (``implementation="redispy"``: the
``coredis`` default is not a dependency of pixelgate) and namespaces its keys under
``{redis_prefix}:limits`` so several deployments can share one Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from limits.aio.storage import Storage

    from pixelgate.config import Settings

__all__ = [
    "MEMORY_URI",
    "limits_storage_options",
    "limits_storage_uri",
    "open_limits_storage",
    "shared_state_backend",
]

MEMORY_URI = "async+memory://"
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


def open_limits_storage(settings: Settings) -> Storage:
    """A ready ``limits.aio`` storage for this deployment."""
    from limits.storage import storage_from_string

    storage = storage_from_string(limits_storage_uri(settings), **limits_storage_options(settings))
    return storage  # type: ignore[return-value]
