"""Outbound limits per provider and per account on a provider (seed 000's per-instance limits).

A call over a limit *waits* for its turn — it never fails for it — and says why through
``on_wait`` (the pipeline turns that into a ``waiting`` event). Order of the waits:

1. the provider asked us to back off (a 429's ``Retry-After``): every job waits it out;
2. concurrency: the account's gate on this provider, then the provider's gate;
3. request rates: the account's, then the provider's (moving windows).

Concurrency is taken before the rate so that a rate token is spent only by a request
that is about to be sent. The gates, windows and pauses are memory or Redis (shared by
every process), as :func:`~pixelgate.resilience.shared.open_shared_state` chose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass

from pixelgate.config import OutboundLimit
from pixelgate.resilience.pauses import MemoryPauses, Pauses
from pixelgate.resilience.ratelimit import Gates, MemoryGates, RateWindows
from pixelgate.resilience.retry import Clock

__all__ = ["FREE_SLOT", "OnWait", "OutboundLimiter", "WaitInfo"]

DEFAULT_KEY = "*"
#: the slot of a call that no limit or pause holds back
FREE_SLOT: AbstractAsyncContextManager[None] = nullcontext()


@dataclass(frozen=True)
class WaitInfo:
    """Why a call waits."""

    provider: str
    kind: str  # "retry_after" | "concurrency" | "rate"
    scope: str  # "provider" | "account"
    reason: str
    limit: int | str | None = None
    in_flight: int | None = None
    retry_in_s: float | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "provider": self.provider,
            "kind": self.kind,
            "scope": self.scope,
            "reason": self.reason,
        }
        if self.limit is not None:
            data["limit"] = self.limit
        if self.in_flight is not None:
            data["in_flight"] = self.in_flight
        if self.retry_in_s is not None:
            data["retry_in_s"] = round(self.retry_in_s, 3)
        return data


OnWait = Callable[[WaitInfo], Awaitable[None]]


def _rates(limit: OutboundLimit | None, *, account: bool) -> list[str]:
    if limit is None:
        return []
    rpm, rate = (limit.account_rpm, limit.account_rate) if account else (limit.rpm, limit.rate)
    out = [f"{rpm}/minute"] if rpm else []
    return [*out, rate] if rate else out


class OutboundLimiter:
    """Holds the limits (hot-configurable), the gates, the rate windows and provider pauses."""

    def __init__(
        self,
        limits: dict[str, OutboundLimit] | None = None,
        *,
        gates: Gates | None = None,
        windows: RateWindows | None = None,
        pauses: Pauses | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.limits = dict(limits or {})
        self.gates: Gates = gates or MemoryGates()
        self.windows = windows or RateWindows()
        self.clock = clock or Clock()
        self.pauses: Pauses = pauses or MemoryPauses(self.clock)

    def configure(self, limits: dict[str, OutboundLimit]) -> None:
        self.limits = dict(limits)

    def limit_for(self, provider: str) -> OutboundLimit | None:
        return self.limits.get(provider) or self.limits.get(DEFAULT_KEY)

    async def pause(self, provider: str, seconds: float) -> None:
        """The provider said "retry after ``seconds``": hold every call to it until then."""
        await self.pauses.pause(provider, seconds)

    async def paused(self, providers: Iterable[str]) -> dict[str, float]:
        """Seconds left of each provider's pause (0.0 when not paused)."""
        return await self.pauses.remaining(providers)

    def known_unpaused(self, providers: Iterable[str]) -> bool:
        """Whether this process knows, without a read, that none of them is paused."""
        return self.pauses.known_unpaused(providers)

    async def paused_for(self, provider: str) -> float:
        return (await self.pauses.remaining([provider]))[provider]

    async def usage(self, provider: str) -> dict[str, object]:
        limit = self.limit_for(provider)
        in_flight, waiting = await self.gates.usage(f"p:{provider}")
        return {
            "concurrency": limit.concurrency if limit else None,
            "rate": _rates(limit, account=False) or None,
            "account_concurrency": limit.account_concurrency if limit else None,
            "account_rate": _rates(limit, account=True) or None,
            "in_flight": in_flight,
            "waiting": waiting,
            "paused_for_s": round(await self.paused_for(provider), 3) or None,
        }

    def slot(
        self,
        provider: str,
        account: str,
        *,
        account_limit: OutboundLimit | None = None,
        on_wait: OnWait | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Hold a slot for one call to ``provider`` on behalf of ``account``.

        ``account_limit`` (the account's own setting) replaces the provider's
        ``account_*`` limits; its ``rpm``/``rate``/``concurrency`` apply per account.
        """
        if (
            account_limit is None
            and self.limit_for(provider) is None
            and isinstance(self.pauses, MemoryPauses)
            and self.pauses.left(provider) <= 0
        ):
            # nothing to hold or wait for: no generator, closures or awaits per call
            return FREE_SLOT
        return self._slot(provider, account, account_limit=account_limit, on_wait=on_wait)

    @asynccontextmanager
    async def _slot(
        self,
        provider: str,
        account: str,
        *,
        account_limit: OutboundLimit | None,
        on_wait: OnWait | None,
    ) -> AsyncIterator[None]:
        limit = self.limit_for(provider)
        if account_limit is not None:
            acct_conc = account_limit.concurrency
            acct_rates = _rates(account_limit, account=False)
        else:
            acct_conc = limit.account_concurrency if limit else None
            acct_rates = _rates(limit, account=True)
        told: set[tuple[str, str]] = set()

        async def wait(info: WaitInfo) -> None:
            if on_wait is not None and (info.kind, info.scope) not in told:
                told.add((info.kind, info.scope))
                await on_wait(info)

        while (left := await self.paused_for(provider)) > 0:
            await wait(
                WaitInfo(
                    provider,
                    "retry_after",
                    "provider",
                    f"{provider} asked to retry after {left:.1f} s",
                    retry_in_s=left,
                )
            )
            await self.clock.sleep(left)

        held: list[str] = []
        try:
            gates = [
                (f"a:{account}:{provider}", acct_conc, "account"),
                (f"p:{provider}", limit.concurrency if limit else None, "provider"),
            ]
            for key, cap, scope in gates:
                if cap is None:
                    continue
                if not await self.gates.try_acquire(key, cap):
                    in_flight, _ = await self.gates.usage(key)
                    who = f"this account's calls to {provider}" if scope == "account" else provider
                    await wait(
                        WaitInfo(
                            provider,
                            "concurrency",
                            scope,
                            f"{who}: {in_flight} of {cap} concurrent requests in flight",
                            limit=cap,
                            in_flight=in_flight,
                        )
                    )
                    await self.gates.acquire(key, cap)
                held.append(key)
            windows: list[tuple[str, tuple[str, ...], str]] = [
                (r, ("account", account, provider), "account") for r in acct_rates
            ]
            provider_rates = _rates(limit, account=False)
            windows += [(r, ("provider", provider), "provider") for r in provider_rates]
            for rate, key_parts, scope in windows:
                while (delay := await self.windows.acquire(rate, *key_parts)) > 0:
                    who = f"this account's calls to {provider}" if scope == "account" else provider
                    await wait(
                        WaitInfo(
                            provider,
                            "rate",
                            scope,
                            f"{who}: rate limit {rate} reached; next slot in {delay:.1f} s",
                            limit=rate,
                            retry_in_s=delay,
                        )
                    )
                    await asyncio.sleep(delay)
            yield
        finally:
            for key in reversed(held):
                await self.gates.release(key)
