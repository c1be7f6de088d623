"""Per-account request-rate limits (a tier's ``requests_per_minute``) on the `limits` library.

Moving window, exact and bounded by the limit. Memory storage in the embedded
deployment; the Redis storage of the deployment shares the window across processes
(the pipeline passes the storage of its shared state, ``shared.py``). While Redis is
unreachable the limit fails open, like the rest of the shared state (``outage.py``):
an outage of the counter store must not turn every request into an error.
"""

from __future__ import annotations

import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from pixelgate.config import Settings
from pixelgate.errors import RateLimited
from pixelgate.resilience.outage import Outage
from pixelgate.resilience.storage import open_limits_storage

__all__ = ["RequestLimiter"]

NAMESPACE = "pixelgate:requests"


class RequestLimiter:
    """``hit(account, per_minute)`` counts one request or raises ``RateLimited``."""

    def __init__(self, storage: Storage | None = None, *, guard: Outage | None = None) -> None:
        self._limiter = MovingWindowRateLimiter(storage or MemoryStorage())
        self._guard = guard

    @classmethod
    def for_settings(cls, settings: Settings) -> RequestLimiter:
        """Memory in the embedded deployment; Redis (shared by every process) with scale-out."""
        return cls(open_limits_storage(settings))

    async def hit(self, account_id: str, per_minute: int | None) -> None:
        if per_minute is None:
            return
        item = RateLimitItemPerMinute(per_minute, namespace=NAMESPACE)
        if self._guard is None:
            allowed = await self._limiter.hit(item, account_id)
        else:
            allowed = await self._guard.run(
                "request limit", lambda: self._limiter.hit(item, account_id), True
            )
        if allowed:
            return
        stats = await self._limiter.get_window_stats(item, account_id)
        raise RateLimited(
            f"Rate limit exceeded: {per_minute} requests per minute",
            retry_after=max(1.0, stats.reset_time - time.time()),
            limit=per_minute,
            remaining=0,
            reset_at=stats.reset_time,
        )
