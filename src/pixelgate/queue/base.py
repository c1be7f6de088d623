"""How generation ids reach workers: the queue-engine interface and the embedded engine.

Whatever the engine, the generations row is the truth: a worker claims it by
compare-and-set (``PENDING → PROCESSING`` with a lease it renews), so a duplicate or late
delivery is a no-op, and a job is done only when its row is terminal. An engine only
decides *which process hears about which id, and when*:

- ``embedded`` — the lease worker polls the generations table itself (SQLite or
  PostgreSQL, no other service). The default.
- ``procrastinate`` — PostgreSQL jobs carrying generation ids, enqueued by a trigger in
  the admission transaction (:mod:`pixelgate.queue.engine`). The scale-out default.

The engine is picked by configuration (``PIXELGATE_QUEUE``, default "auto": procrastinate
on PostgreSQL), never by a different pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pixelgate.config import Settings
    from pixelgate.core.bus import EventBus
    from pixelgate.core.pipeline import Pipeline
    from pixelgate.db.store import Store
    from pixelgate.queue.worker import Worker

__all__ = ["EmbeddedQueue", "JobQueue", "open_queue", "prepare_queue"]


class JobQueue(Protocol):
    """A queue engine: its schema, its workers and its health."""

    name: str

    async def prepare(self) -> None:
        """Create what the engine needs in the database (idempotent; run at start-up)."""

    def make_worker(
        self,
        *,
        store: Store,
        pipeline: Pipeline,
        bus: EventBus,
        concurrency: int,
        lease_s: float,
        poll_s: float,
        max_deliveries: int,
    ) -> Worker:
        """A worker that runs up to ``concurrency`` jobs at once in this process."""

    async def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "down", "engine": name, ...}`` for ``/health``."""

    async def close(self) -> None: ...


class EmbeddedQueue:
    """The lease worker over the generations table; nothing to prepare, nothing to open."""

    name = "embedded"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def prepare(self) -> None:
        return None

    def make_worker(
        self,
        *,
        store: Store,
        pipeline: Pipeline,
        bus: EventBus,
        concurrency: int,
        lease_s: float,
        poll_s: float,
        max_deliveries: int,
    ) -> Worker:
        from pixelgate.queue.worker import Worker

        return Worker(
            store=store,
            pipeline=pipeline,
            bus=bus,
            concurrency=concurrency,
            lease_s=lease_s,
            poll_s=poll_s,
            max_deliveries=max_deliveries,
        )

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "engine": self.name, **await self.store.queue_depth()}

    async def close(self) -> None:
        return None


def open_queue(settings: Settings, store: Store) -> JobQueue:
    """The engine named by the settings (``queue``, or "auto" from the database URL)."""
    if settings.resolved_queue == "procrastinate":
        from pixelgate.queue.engine import ProcrastinateQueue

        return ProcrastinateQueue(settings.resolved_database_url, store=store)
    return EmbeddedQueue(store)


async def prepare_queue(settings: Settings) -> bool:
    """Create the engine's schema, if it has one (``pixelgate migrate``); whether it changed."""
    if settings.resolved_queue == "procrastinate":
        from pixelgate.queue.engine import install_schema, psycopg_conninfo

        return await install_schema(psycopg_conninfo(settings.resolved_database_url))
    return False
