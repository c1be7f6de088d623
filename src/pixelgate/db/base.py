"""What every part of the store shares: the database, the group-commit writer, the clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pixelgate.core.models import AccountView
from pixelgate.db.engine import Database, TxFunction
from pixelgate.db.writer import GroupWriter
from pixelgate.shared_loads import SharedLoads

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
        self._account_loads: SharedLoads[str, AccountView] = SharedLoads()
        # url_for(key) -> str, set by the runtime so views carry image URLs
        self.url_for: Callable[[str], str] = url_for or (lambda key: f"/files/{key}")

    def _forget_account(self, account_id: str) -> None:
        """Drop the cached account (and a read in flight) after this process changed it."""
        self._account_cache.pop(account_id, None)
        self._account_loads.forget(account_id)

    @property
    def postgres(self) -> bool:
        return self.db.dialect == "postgresql"

    async def write(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run a transaction function in the next group commit; its result after the commit."""
        return await self.writer.run(_bind(fn, args, kwargs))

    async def read(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run a read-only function over one connection, in one hop."""
        return await self.db.run(_bind(fn, args, kwargs))

    def _event_data(self, data: dict[str, Any]) -> dict[str, Any]:
        key = data.get("key")
        return {**data, "url": self.url_for(key)} if isinstance(key, str) else data


def _bind(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> TxFunction:
    """``fn`` as a transaction function: the connection first, then ``args``."""
    if not args and not kwargs:
        return fn
    return lambda c: fn(c, *args, **kwargs)
