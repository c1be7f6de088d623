"""One load at a time per key, shared by every caller that asks meanwhile.

A short-lived cache in front of a query (the API key's caller, the account's settings)
misses for every request in flight at the moment its entry expires; in a burst that is
thousands of identical queries at once. :class:`SharedLoads` starts one load per key and
hands its value (or its error) to every caller that asked while it ran. A caller that is
cancelled does not cancel the load for the others. A key forgotten while its load runs
(the thing changed meanwhile) still answers the callers already waiting, but its value is
not kept: the next caller loads again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["SharedLoads"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedLoads(Generic[K, V]):
    """The loads under way, by key."""

    def __init__(self) -> None:
        self._loads: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]], keep: Callable[[V], None]) -> V:
        """``load()``'s value: a load started now, or the one under way for ``key``.
        ``keep(value)`` runs once it is done, unless ``key`` was forgotten meanwhile."""
        task = self._loads.get(key)
        if task is None:
            task = asyncio.ensure_future(self._run(key, load, keep))
            task.add_done_callback(_retrieve)
            self._loads[key] = task
        return await asyncio.shield(task)

    async def _run(self, key: K, load: Callable[[], Awaitable[V]], keep: Callable[[V], None]) -> V:
        me = asyncio.current_task()
        try:
            value = await load()
        finally:
            current = self._loads.get(key)
            if current is me:
                del self._loads[key]
        if current is me:  # not forgotten meanwhile: what it read is current
            keep(value)
        return value

    def forget(self, key: K) -> None:
        """The load under way for ``key`` (if any) answers its callers; its value is not kept."""
        self._loads.pop(key, None)

    def clear(self) -> None:
        """:meth:`forget` every key."""
        self._loads.clear()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared load's error as seen: its callers each get it from ``shield``."""
    if not task.cancelled():
        task.exception()
