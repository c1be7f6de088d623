"""Reading generations, their events, images and batches (each read in one hop)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from pixelgate.core.models import EventView, GenerationView, ImageView, Status
from pixelgate.db.accounts import AccountStore
from pixelgate.db.records import (
    BATCH,
    EVT,
    GEN,
    IMG,
    BatchView,
    batch_view,
    generation_view,
    image_view,
)
from pixelgate.db.tables import Account, EntityLink
from pixelgate.errors import NotFound

__all__ = ["ReadStore"]

_WITH_ACCOUNT = select(GEN, Account.name.label("account_name")).join(
    Account, Account.id == GEN.c.account_id
)
_BATCH_MEMBERS = select(GEN.c.id, GEN.c.status, GEN.c.credits, GEN.c.completed_at)


class ReadStore(AccountStore):
    """What the API and the pipeline read of generations."""

    async def get_generation(self, gen_id: str, *, account_id: str | None = None) -> GenerationView:
        """The generation with its images; ``NotFound`` for another account's."""
        view: GenerationView | None = await self.read(self._load_generation, gen_id)
        if view is None or (account_id is not None and view.account_id != account_id):
            raise NotFound(f"generation {gen_id!r} not found")
        return view

    def _load_generation(self, c: Connection, gen_id: str) -> GenerationView | None:
        row = c.execute(_WITH_ACCOUNT.where(GEN.c.id == gen_id)).first()
        if row is None:
            return None
        images = c.execute(
            select(IMG).where(IMG.c.generation_id == gen_id).order_by(IMG.c.index)
        ).all()
        view = generation_view(row, row.account_name, images, self.url_for)
        if view.status == Status.PENDING:
            view.queue_position = c.scalar(
                select(func.count())
                .select_from(GEN)
                .where(GEN.c.status == Status.PENDING.value, GEN.c.created_at < row.created_at)
            )
        return view

    async def list_generations(
        self,
        *,
        account_id: str | None,
        status: Status | None = None,
        limit: int = 20,
        cursor: str | None = None,
        batch_id: str | None = None,
        entity: tuple[str, str | None] | None = None,
    ) -> list[GenerationView]:
        """Newest first; ``cursor`` is the last id of the previous page (ids sort by time).

        ``entity`` is ``(type, id)`` (``id`` None: any entity of the type) of a link.
        """
        query = _WITH_ACCOUNT
        if account_id is not None:
            query = query.where(GEN.c.account_id == account_id)
        if status is not None:
            query = query.where(GEN.c.status == status.value)
        if batch_id is not None:
            query = query.where(GEN.c.batch_id == batch_id)
        if entity is not None:
            linked = select(EntityLink.id).where(
                EntityLink.generation_id == GEN.c.id, EntityLink.entity_type == entity[0]
            )
            if entity[1] is not None:
                linked = linked.where(EntityLink.entity_id == entity[1])
            query = query.where(linked.exists())
        if cursor:
            query = query.where(GEN.c.id < cursor)
        query = query.order_by(GEN.c.id.desc()).limit(limit)

        def read(c: Connection) -> list[GenerationView]:
            rows = c.execute(query).all()
            images: dict[str, list[Any]] = {r.id: [] for r in rows}
            if images:
                for img in c.execute(
                    select(IMG).where(IMG.c.generation_id.in_(list(images))).order_by(IMG.c.index)
                ):
                    images[img.generation_id].append(img)
            return [generation_view(r, r.account_name, images[r.id], self.url_for) for r in rows]

        views: list[GenerationView] = await self.read(read)
        return views

    async def status_of(self, gen_id: str) -> tuple[str, bool] | None:
        query = select(GEN.c.status, GEN.c.cancel_requested).where(GEN.c.id == gen_id)
        row = await self.read(lambda c: c.execute(query).first())
        return (row[0], row[1]) if row else None

    async def events_after(self, gen_id: str, after_id: int = 0) -> list[EventView]:
        """Events after ``after_id``; one that names a stored object (``key``: a partial
        image) gets its ``url`` now, as images do, so a presigned URL is always fresh."""
        query = (
            select(EVT.c.id, EVT.c.generation_id, EVT.c.type, EVT.c.data, EVT.c.created_at)
            .where(EVT.c.generation_id == gen_id, EVT.c.id > after_id)
            .order_by(EVT.c.id)
        )
        rows = await self.read(lambda c: c.execute(query).all())
        return [
            EventView(
                id=r[0], generation_id=r[1], type=r[2], data=self._event_data(r[3]), created_at=r[4]
            )
            for r in rows
        ]

    async def account_events_after(
        self, account_id: str, after_id: int, *, limit: int, up_to: int | None = None
    ) -> list[EventView]:
        """Events of every generation of the account after ``after_id`` (and at most
        ``up_to``), oldest first."""
        query = (
            select(EVT.c.id, EVT.c.generation_id, EVT.c.type, EVT.c.data, EVT.c.created_at)
            .join(GEN, GEN.c.id == EVT.c.generation_id)
            .where(GEN.c.account_id == account_id, EVT.c.id > after_id)
            .order_by(EVT.c.id)
            .limit(limit)
        )
        if up_to is not None:
            query = query.where(EVT.c.id <= up_to)
        rows = await self.read(lambda c: c.execute(query).all())
        return [
            EventView(
                id=r[0], generation_id=r[1], type=r[2], data=self._event_data(r[3]), created_at=r[4]
            )
            for r in rows
        ]

    async def last_event_id(self) -> int:
        """The newest event's id (0 when there is none): where a live-only stream starts."""
        value = await self.read(lambda c: c.execute(select(func.max(EVT.c.id))).scalar())
        return int(value or 0)

    async def get_image(self, image_id: str, *, account_id: str | None) -> tuple[ImageView, str]:
        """An image and its generation id; ``NotFound`` for another account's."""
        row = await self.read(lambda c: c.execute(select(IMG).where(IMG.c.id == image_id)).first())
        if row is None or (account_id is not None and row.account_id != account_id):
            raise NotFound(f"image {image_id!r} not found")
        return image_view(row, self.url_for), row.generation_id

    async def settled_followers(self, leader_id: str, completed_at: Any) -> list[str]:
        """The followers finished together with their leader (for notifications)."""
        if completed_at is None:
            return []
        query = select(GEN.c.id).where(
            GEN.c.cached_from == leader_id, GEN.c.completed_at == completed_at
        )
        return list(await self.read(lambda c: c.scalars(query).all()))

    async def queue_depth(self) -> dict[str, int]:
        """How many generations wait (PENDING) and run (PROCESSING), for ``/health``."""
        live = (Status.PENDING.value, Status.PROCESSING.value)
        query = (
            select(GEN.c.status, func.count()).where(GEN.c.status.in_(live)).group_by(GEN.c.status)
        )
        rows = await self.read(lambda c: c.execute(query).all())
        counts = {status: int(count) for status, count in rows}
        return {"pending": counts.get(live[0], 0), "processing": counts.get(live[1], 0)}

    # Batches -----------------------------------------------------------------

    async def get_batch(self, batch_id: str, *, account_id: str | None) -> BatchView:
        """A batch with its members' ids and counts per status; ``NotFound`` for another
        account's."""

        def read(c: Connection) -> tuple[Any, list[Any]]:
            row = c.execute(select(BATCH).where(BATCH.c.id == batch_id)).first()
            if row is None:
                return None, []
            members = c.execute(
                _BATCH_MEMBERS.where(GEN.c.batch_id == batch_id).order_by(GEN.c.id)
            ).all()
            return row, list(members)

        row, members = await self.read(read)
        if row is None or (account_id is not None and row.account_id != account_id):
            raise NotFound(f"batch {batch_id!r} not found")
        return batch_view(row, members)

    async def list_batches(
        self, *, account_id: str | None, limit: int = 20, cursor: str | None = None
    ) -> list[BatchView]:
        """Newest first; ``cursor`` is the last id of the previous page."""
        query = select(BATCH)
        if account_id is not None:
            query = query.where(BATCH.c.account_id == account_id)
        if cursor:
            query = query.where(BATCH.c.id < cursor)

        def read(c: Connection) -> list[BatchView]:
            batches = c.execute(query.order_by(BATCH.c.id.desc()).limit(limit)).all()
            members: dict[str, list[Any]] = {b.id: [] for b in batches}
            if batches:
                rows = c.execute(
                    select(GEN.c.batch_id, *_BATCH_MEMBERS.selected_columns)
                    .where(GEN.c.batch_id.in_(list(members)))
                    .order_by(GEN.c.id)
                )
                for batch_id, *member in rows:
                    members[str(batch_id)].append(member)
            return [batch_view(b, members[b.id]) for b in batches]

        views: list[BatchView] = await self.read(read)
        return views
