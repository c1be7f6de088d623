"""Per-account request-rate limits (a tier's ``requests_per_minute``) on the `limits` library.

Moving window, exact and bounded by the limit. Memory storage in the embedded
deployment; the Redis storage of the deployment shares the window across processes
(the pipeline passes the storage of its shared state, ``shared.py``; in one process
`limits` is imported at the first admission of an account with a limit). While Redis is
unreachable the limit fails open, like the rest of the shared state (``outage.py``):
an outage of the counter store must not turn every request into an error.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING

from pixelgate.config import Settings
from pixelgate.errors import RateLimited
from pixelgate.resilience.counters import open_limits_storage
from pixelgate.resilience.outage import Outage
from pixelgate.resilience.ratelimit import moving_window

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.storage import Storage
    from limits.aio.strategies import MovingWindowRateLimiter

__all__ = ["RequestLimiter"]

NAMESPACE = "pixelgate:requests"
#: the admission of an account without a limit: nothing to check, count or wait for
_UNLIMITED: AbstractAsyncContextManager[None] = nullcontext()


class RequestLimiter:
    """Counts admitted requests per account against a tier's ``requests_per_minute``.

    ``async with limiter.admitting(account, per_minute):`` around an admission refuses
    (``RateLimited``) when the window is full and counts the request only when the
    admission succeeds: a request refused for any other reason (credits, budget, a bad
    field) counts against nothing. One account's admissions take turns within a process,
    so the check and the count cannot interleave there; across processes, concurrent
    admissions of one account may pass the check together (at most one per process over
    the limit).
    """

    def __init__(self, storage: Storage | None = None, *, guard: Outage | None = None) -> None:
        self._storage = storage
        self._made: MovingWindowRateLimiter | None = None
        self._guard = guard
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @property
    def _limiter(self) -> MovingWindowRateLimiter:
        if self._made is None:
            self._made = moving_window(self._storage)
        return self._made

    @classmethod
    def for_settings(cls, settings: Settings) -> RequestLimiter:
        """Memory in the embedded deployment; Redis (shared by every process) with scale-out."""
        return cls(open_limits_storage(settings))

    def admitting(
        self, account_id: str, per_minute: int | None
    ) -> AbstractAsyncContextManager[None]:
        """Refuse when the account's window is full; count the request if the block succeeds.

        Raises:
            RateLimited: the window is full (nothing is counted).
        """
        if per_minute is None:
            return _UNLIMITED
        return self._admitting(account_id, per_minute)

    @asynccontextmanager
    async def _admitting(self, account_id: str, per_minute: int) -> AsyncIterator[None]:
        from limits import RateLimitItemPerMinute

        item = RateLimitItemPerMinute(per_minute, namespace=NAMESPACE)
        turn = self._turns.get(account_id)
        if turn is None:
            turn = self._turns[account_id] = asyncio.Lock()
        async with turn:
            if not await self._shared("test", lambda: self._limiter.test(item, account_id)):
                await self._refuse(item, account_id, per_minute)
            yield
            await self._shared("hit", lambda: self._limiter.hit(item, account_id))

    async def _shared(self, what: str, call: Callable[[], Awaitable[bool]]) -> bool:
        if self._guard is None:
            return await call()
        return await self._guard.run(f"request limit ({what})", call, True)

    async def _refuse(self, item: RateLimitItem, account_id: str, per_minute: int) -> None:
        stats = await self._limiter.get_window_stats(item, account_id)
        raise RateLimited(
            f"Rate limit exceeded: {per_minute} requests per minute",
            retry_after=max(1.0, stats.reset_time - time.time()),
            limit=per_minute,
            remaining=0,
            reset_at=stats.reset_time,
        )
