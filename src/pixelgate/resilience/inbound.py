"""Per-account request-rate limits (a tier's ``requests_per_minute``) on the `limits` library.

Moving window, exact and bounded by the limit. Memory storage in the embedded
deployment; a ``redis://`` storage URI shares the window across processes.
"""

from __future__ import annotations

import time
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from pixelgate.config import Settings
from pixelgate.errors import RateLimited
from pixelgate.resilience.storage import limits_storage_options, limits_storage_uri

__all__ = ["RequestLimiter"]

NAMESPACE = "pixelgate:requests"


class RequestLimiter:
    """``hit(account, per_minute)`` counts one request or raises ``RateLimited``."""

    def __init__(self, storage_uri: str = "async+memory://", **options: Any) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri, **options))

    @classmethod
    def for_settings(cls, settings: Settings) -> RequestLimiter:
        """Memory in the embedded deployment; Redis (shared by every process) with scale-out."""
        return cls(limits_storage_uri(settings), **limits_storage_options(settings))

    async def hit(self, account_id: str, per_minute: int | None) -> None:
        if per_minute is None:
            return
        item = RateLimitItemPerMinute(per_minute, namespace=NAMESPACE)
        if await self._limiter.hit(item, account_id):
            return
        stats = await self._limiter.get_window_stats(item, account_id)
        raise RateLimited(
            f"Rate limit exceeded: {per_minute} requests per minute",
            retry_after=max(1.0, stats.reset_time - time.time()),
            limit=per_minute,
            remaining=0,
            reset_at=stats.reset_time,
        )
