"""What finish hooks (webhooks, e-mail, cache followers) are handed when a job ends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pixelgate.core.models import GenerationView

__all__ = ["FinishHook", "Finished", "skips"]


class Finished:
    """A generation that has just reached a terminal state.

    The finishing code fills in what it already knows (status, account, request); a
    hook that needs more calls :meth:`view`, which reads the generation once for every
    hook. Most jobs need no read at all: no webhook, no e-mail, no followers.
    """

    def __init__(
        self,
        generation_id: str,
        load: Callable[[], Awaitable[GenerationView]],
        *,
        status: str | None = None,
        account_id: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> None:
        self.id = generation_id
        self._load = load
        self._status = status
        self._account_id = account_id
        self._request = request
        self._view: asyncio.Future[GenerationView] | None = None

    async def view(self) -> GenerationView:
        """The whole generation (read once, on first use, for all hooks)."""
        if self._view is None:
            self._view = asyncio.ensure_future(self._load())
        return await self._view

    @property
    def known_status(self) -> str | None:
        """The status, if the finishing code gave it (no read)."""
        return self._status

    @property
    def known_account_id(self) -> str | None:
        return self._account_id

    @property
    def known_request(self) -> dict[str, Any] | None:
        return self._request

    async def status(self) -> str:
        return self._status if self._status is not None else (await self.view()).status.value

    async def account_id(self) -> str:
        return self._account_id if self._account_id is not None else (await self.view()).account_id

    async def request(self) -> dict[str, Any]:
        return self._request if self._request is not None else (await self.view()).request


#: called once a generation reaches a terminal state (webhooks, e-mail, cache…)
FinishHook = Callable[[Finished], Awaitable[None]]


def skips(hook: FinishHook, finished: Finished) -> bool:
    """Whether ``hook`` says, without awaiting, that it has nothing to do for ``finished``
    (its optional ``skips(finished)``): no task is started for it then. Most jobs have no
    webhook, e-mail or followers, and three tasks per job were ~3 % of a sync request's
    CPU (py-spy)."""
    check = getattr(hook, "skips", None)
    return check is not None and bool(check(finished))
