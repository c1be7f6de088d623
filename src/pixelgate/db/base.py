"""What every part of the store shares: the database, the group-commit writer, the clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pixelgate.core.models import AccountView
from pixelgate.db.engine import Database
from pixelgate.db.writer import GroupWriter

__all__ = ["StoreBase", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class StoreBase:
    """The state shared by the store's parts (one per concern, see :mod:`pixelgate.db.store`).

    Writes on the hot path are transaction functions handed to :attr:`writer` (group
    commit); reads that matter for speed are functions run in one hop by :meth:`read`.
    """

    def __init__(
        self, db: Database, *, url_for: Any = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.db = db
        #: the time source; tests freeze it to prove windows and midnights
        self.clock = clock or utcnow
        self.writer = GroupWriter(db)
        self._account_cache: dict[str, tuple[float, AccountView]] = {}
        # Statements that lock many generation rows at once outside the writer (the
        # reaper) take turns in this process: two of them locking rows in different
        # orders could deadlock on PostgreSQL.
        self._many_rows = asyncio.Lock()
        # url_for(key) -> str, set by the runtime so views carry image URLs
        self.url_for: Callable[[str], str] = url_for or (lambda key: f"/files/{key}")

    @property
    def postgres(self) -> bool:
        return self.db.dialect == "postgresql"

    async def write(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run a transaction function in the next group commit; its result after the commit."""
        return await self.writer.run(partial(fn, *args, **kwargs))

    async def read(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run a read-only function over one connection, in one hop."""
        return await self.db.run(partial(fn, *args, **kwargs))

    def _event_data(self, data: dict[str, Any]) -> dict[str, Any]:
        key = data.get("key")
        return {**data, "url": self.url_for(key)} if isinstance(key, str) else data
