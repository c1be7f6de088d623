"""Group commit: the write transactions of many concurrent jobs share one database commit.

One writer per process. A caller hands over a *transaction function* (plain synchronous
code over one SQLAlchemy ``Connection``: admission, a claim, a finish…) and awaits its
result. Every function handed over while the previous batch was being written goes into
the next batch, which :meth:`Database.run_batch` runs in one transaction (under one
savepoint; each function in its own only when one of them raised) and commits once. So
the window adapts by itself: an idle writer writes a lone request at once, and under
load each commit carries whatever arrived during the last one, without any timer.

Durability is not traded away: a caller's ``await`` returns only after the commit that
holds its rows. A function that raises fails alone (its savepoint is rolled back); a
failed commit fails every caller of the batch, none of whose writes then exist. A caller
cancelled before its batch starts is left out of it. On PostgreSQL, two processes'
batches can deadlock; the function the database picked as the victim is run again in
the next batch (its savepoint was rolled back, so nothing of it was written).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TypeVar

from pixelgate.db.engine import Database, TxFunction

__all__ = ["GroupWriter"]

T = TypeVar("T")
#: transaction functions per commit: bounds how long one batch holds the write lock
MAX_BATCH = 256


#: PostgreSQL's deadlock_detected and serialization_failure: retried, not reported
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
MAX_TRIES = 5


@dataclass
class _Item:
    fn: TxFunction
    future: asyncio.Future[Any]
    tries: int = 0


def _retryable(error: BaseException) -> bool:
    """A conflict with another process's transaction (a deadlock between two group
    commits that lock rows in different orders): running it again will succeed."""
    orig = getattr(error, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state in RETRYABLE_SQLSTATES


class GroupWriter:
    """Collects transaction functions and writes them in shared transactions."""

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[_Item] = []
        self._task: asyncio.Task[None] | None = None
        #: counters for tests and benchmarks: commits made, functions run
        self.commits = 0
        self.functions = 0

    async def run(self, fn: TxFunction) -> Any:
        """Run ``fn`` in the next shared transaction; its result once that has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Item(fn, future))
        if self._task is None:
            self._task = loop.create_task(self._drain(), name="pixelgate-writer")
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = [item for item in self._queue[: self.max_batch] if not item.future.done()]
                del self._queue[: self.max_batch]
                if batch:
                    await self._write(batch)
        finally:
            self._task = None

    async def _write(self, batch: list[_Item]) -> None:
        try:
            outcomes = await self.db.run_batch([item.fn for item in batch])
        except asyncio.CancelledError:
            for item in batch:
                item.future.cancel()
            raise
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.commits += 1
        self.functions += len(batch)
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            elif _retryable(value) and item.tries + 1 < MAX_TRIES:
                item.tries += 1
                self._queue.append(item)  # its savepoint was rolled back: nothing written
            else:
                item.future.set_exception(value)
