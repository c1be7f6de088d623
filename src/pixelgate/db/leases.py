"""The queue columns of generations: claims, leases, the reaper, and what a running job
writes while it runs (its events, its provider job id).

Every transition is a compare-and-set guarded by :mod:`pixelgate.core.states`, so a
duplicate delivery or a late worker is a no-op. Claims and lease renewals are
transaction functions of the group-commit writer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    Update,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    update,
)

from pixelgate.core.models import Status
from pixelgate.core.states import sources_of
from pixelgate.db.prepared import Prepared
from pixelgate.db.reads import ReadStore
from pixelgate.db.records import BATCH, GEN, ClaimedJob, RunningEvent
from pixelgate.db.rows import event_row, insert_events, running_rows
from pixelgate.db.setbased import update_rows
from pixelgate.errors import NotFound

__all__ = ["LeaseStore"]

#: what a claim returns of the claimed row (see ``LeaseStore._claimed``)
_CLAIM_COLUMNS = (
    GEN.c.id,
    GEN.c.account_id,
    GEN.c.project,
    GEN.c.request,
    GEN.c.created_at,
    GEN.c.provider_job_id,
    GEN.c.provider_job_provider,
    GEN.c.deliveries,
    GEN.c.batch_id,
)


#: a PENDING row handed to a worker at admission, under its lease
HANDED_OVER = and_(GEN.c.status == Status.PENDING.value, GEN.c.lease_owner.is_not(None))
#: rows a worker holds: running, or handed over and about to run
HELD = or_(GEN.c.status == Status.PROCESSING.value, HANDED_OVER)


def _claimable() -> list[Any]:
    """Claim conditions beyond ``PENDING``: not a follower (its leader finishes it), not
    handed to a worker whose lease lives, and not a member of a batch already running
    ``concurrency`` members."""
    running = GEN.alias("running")
    limit = select(BATCH.c.concurrency).where(BATCH.c.id == GEN.c.batch_id).scalar_subquery()
    in_flight = (
        select(func.count())
        .select_from(running)
        .where(running.c.batch_id == GEN.c.batch_id, running.c.status == Status.PROCESSING.value)
        .scalar_subquery()
    )
    return [
        GEN.c.cached_from.is_(None),
        or_(GEN.c.lease_expires_at.is_(None), GEN.c.lease_expires_at < bindparam("now")),
        or_(GEN.c.batch_id.is_(None), limit.is_(None), limit > in_flight),
    ]


# built once: constructing these expressions is not free
_CLAIMABLE = _claimable()
_NOW = bindparam("now", type_=GEN.c.updated_at.type)


def _among(name: str, *, postgres: bool) -> ColumnElement[bool]:
    """``id`` among the list bound as ``name``: one parameter whatever the length (one
    statement to compile and prepare), an array on PostgreSQL, a JSON array read by
    ``json_each`` on SQLite."""
    if postgres:
        return GEN.c.id == any_(bindparam(name, type_=ARRAY(String)))
    listed = func.json_each(bindparam(name, type_=JSON)).table_valued("value")
    return GEN.c.id.in_(select(listed.c.value))


def _claim_candidates(*, named: bool, postgres: bool) -> Select[Any]:
    """Runnable PENDING rows, oldest first: among ``:ids`` (a queue engine's delivery) or
    any due by ``:now``; at most ``:limit``, locked and skipping locked ones on PostgreSQL."""
    due = _among("ids", postgres=postgres) if named else GEN.c.run_after <= _NOW
    query = (
        select(GEN.c.id, GEN.c.batch_id)
        .where(GEN.c.status == Status.PENDING.value, *_CLAIMABLE, due)
        .order_by(GEN.c.run_after, GEN.c.id)
        .limit(bindparam("limit", type_=Integer))
    )
    return query.with_for_update(skip_locked=True, of=GEN) if postgres else query


#: a claim's two statements, built and compiled once (the ids are an expanding IN)
_CANDIDATES = {
    (named, postgres): _claim_candidates(named=named, postgres=postgres)
    for named in (False, True)
    for postgres in (False, True)
}


def _start(*, postgres: bool) -> Update:
    """``PENDING → PROCESSING`` of ``:chosen`` under ``:owner``'s lease until ``:expires``."""
    return (
        update(GEN)
        .where(
            _among("chosen", postgres=postgres),
            GEN.c.status.in_(sources_of(Status.PROCESSING)),
        )
        .values(
            status=Status.PROCESSING.value,
            lease_owner=bindparam("owner", type_=GEN.c.lease_owner.type),
            lease_expires_at=bindparam("expires", type_=GEN.c.lease_expires_at.type),
            deliveries=GEN.c.deliveries + 1,
            started_at=func.coalesce(GEN.c.started_at, _NOW),
            updated_at=_NOW,
        )
        .returning(*_CLAIM_COLUMNS)
    )


_START = {postgres: _start(postgres=postgres) for postgres in (False, True)}
#: the held rows among ``:ids``, in id order (``add_running_events`` locks them on PostgreSQL)
_HELD_AMONG = {
    False: Prepared(select(GEN.c.id).where(_among("ids", postgres=False), HELD).order_by(GEN.c.id)),
    True: Prepared(
        select(GEN.c.id)
        .where(_among("ids", postgres=True), HELD)
        .order_by(GEN.c.id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE
    ),
}


def _requeue(now: datetime) -> dict[str, Any]:
    """The columns that give a held job back to the queue (``→ PENDING``, unleased)."""
    return {
        "status": Status.PENDING.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "run_after": now,
        "updated_at": now,
    }


class LeaseStore(ReadStore):
    """Claims and leases of generations, and the writes of running jobs."""

    async def claim(
        self, owner: str, lease_s: float, limit: int, *, ids: Sequence[str] | None = None
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` runnable PENDING jobs (only among ``ids``, when a queue
        engine delivered them): ``PENDING → PROCESSING`` by CAS, all in one statement,
        within each batch's concurrency (``FOR UPDATE SKIP LOCKED`` on PostgreSQL).

        A named job that is not runnable (a duplicate or late delivery, a job another
        worker holds, a finished or cancelled one) is skipped: its delivery is a no-op.
        """
        now = self.clock()
        expires = now + timedelta(seconds=lease_s)

        query = _CANDIDATES[(ids is not None, self.postgres)]
        params: dict[str, Any] = {"now": now, "limit": limit}
        if ids is not None:
            params["ids"] = list(ids)

        def claim(c: Connection) -> list[Any]:
            found = c.execute(query, params)
            chosen = self._within_batch_limits(c, [(r[0], r[1]) for r in found])
            if not chosen:
                return []
            start = {"chosen": chosen, "owner": owner, "expires": expires, "now": now}
            rows = list(c.execute(_START[self.postgres], start))
            rows.sort(key=lambda r: chosen.index(r[0]))
            insert_events(c, [event_row(r[0], "started", {"delivery": r[7]}, now) for r in rows])
            return rows

        rows: list[Any] = await self.write(claim)
        return [await self._claimed(row) for row in rows]

    async def claim_id(self, gen_id: str, owner: str, lease_s: float) -> ClaimedJob | None:
        """Claim one named job delivered by a queue engine (see :meth:`claim`);
        ``None`` when it is not runnable."""
        jobs = await self.claim(owner, lease_s, 1, ids=[gen_id])
        return jobs[0] if jobs else None

    async def _claimed(self, row: Any) -> ClaimedJob:
        """The :class:`ClaimedJob` of a claimed row (``_CLAIM_COLUMNS``)."""
        created_at = row[4] if row[4].tzinfo is not None else row[4].replace(tzinfo=UTC)
        try:
            name = (await self.get_account_cached(row[1])).name
        except NotFound:
            name = row[1]
        return ClaimedJob(
            id=row[0],
            account_id=row[1],
            account_name=name,
            project=row[2],
            request=row[3],
            created_at=created_at,
            provider_job_id=row[5],
            provider_job_provider=row[6],
            deliveries=row[7],
        )

    def _within_batch_limits(
        self, c: Connection, rows: Sequence[tuple[str, str | None]]
    ) -> list[str]:
        """Trim claim candidates to each batch's free slots, under a lock of the batch rows
        (PostgreSQL; SQLite has one writer) so concurrent claimers cannot overshoot."""
        batch_ids = sorted({b for _, b in rows if b is not None})
        if not batch_ids:
            return [gen_id for gen_id, _ in rows]
        query = (
            select(BATCH.c.id, BATCH.c.concurrency)
            .where(BATCH.c.id.in_(batch_ids))
            .order_by(BATCH.c.id)
        )
        if self.postgres:
            query = query.with_for_update()
        limits = {b: n for b, n in c.execute(query).all() if n is not None}
        room: dict[str, int] = {}
        if limits:
            counts: dict[str, int] = dict(
                c.execute(
                    select(GEN.c.batch_id, func.count())
                    .where(
                        GEN.c.batch_id.in_(list(limits)),
                        GEN.c.status == Status.PROCESSING.value,
                    )
                    .group_by(GEN.c.batch_id)
                ).all()
            )
            room = {b: limits[b] - int(counts.get(b, 0)) for b in limits}
        keep: list[str] = []
        for gen_id, batch_id in rows:
            if batch_id in room:
                if room[batch_id] <= 0:
                    continue
                room[batch_id] -= 1
            keep.append(gen_id)
        return keep

    async def renew_all(self, owner: str, lease_s: float) -> dict[str, bool]:
        """Extend every lease of ``owner`` in one statement; ``{id: cancel_requested}``."""
        now = self.clock()

        def renew(c: Connection) -> dict[str, bool]:
            result = c.execute(
                update(GEN)
                .where(GEN.c.lease_owner == owner, HELD)
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
                .returning(GEN.c.id, GEN.c.cancel_requested)
            )
            return {row[0]: bool(row[1]) for row in result}

        owned: dict[str, bool] = await self.write(renew)
        return owned

    async def release(self, gen_id: str, owner: str) -> bool:
        """Give a job back to the queue (shutdown): ``PROCESSING → PENDING``."""
        now = self.clock()

        def release(c: Connection) -> bool:
            row = c.execute(
                update(GEN)
                .where(GEN.c.id == gen_id, GEN.c.lease_owner == owner, HELD)
                .values(_requeue(now))
                .returning(GEN.c.id)
            ).first()
            if row is not None:
                insert_events(c, [event_row(gen_id, "released", {}, now)])
            return row is not None

        released: bool = await self.write(release)
        return released

    async def reap(self, *, dead_owners: Sequence[str] = ()) -> list[str]:
        """Return jobs whose lease expired (or whose owner is known dead) to PENDING."""
        now = self.clock()
        cond = and_(GEN.c.lease_expires_at.is_not(None), GEN.c.lease_expires_at < now)
        if dead_owners:
            cond = or_(cond, GEN.c.lease_owner.in_(list(dead_owners)))

        def reap(c: Connection) -> list[str]:
            ids = list(
                c.scalars(update(GEN).where(HELD, cond).values(_requeue(now)).returning(GEN.c.id))
            )
            insert_events(c, [event_row(gen_id, "requeued", {}, now) for gen_id in ids])
            return ids

        requeued: list[str] = await self.write(reap)
        return requeued

    async def lease_owners(self) -> list[str]:
        query = select(GEN.c.lease_owner).where(HELD).distinct()
        return [r for r in await self.read(lambda c: c.scalars(query).all()) if r]

    # While running -------------------------------------------------------------

    async def add_running_events(self, events: Sequence[RunningEvent]) -> list[str]:
        """Append events of running generations, whatever their number, in one transaction
        function; returns the generation ids that got one, in order.

        An event whose generation is no longer held by a worker (``PROCESSING``, or
        ``PENDING`` handed over at admission: its first events start it) is dropped. The rows are
        locked first, in id order, so no event can land after a finishing transaction's
        final event.
        """
        if not events:
            return []
        now = self.clock()
        ids = sorted({e.generation_id for e in events})

        query = _HELD_AMONG[self.postgres]

        def add(c: Connection) -> list[str]:
            running = {row.id for row in query.rows(c, {"ids": ids})}
            kept = [e for e in events if e.generation_id in running]
            if kept:
                _apply_event_values(c, kept, now)
                insert_events(c, running_rows(kept, now))
            return [e.generation_id for e in kept]

        added: list[str] = await self.write(add)
        return added

    async def save_provider_job(self, gen_id: str, provider: str, job_id: str) -> None:
        await self._set_provider_job(gen_id, provider, job_id)

    async def clear_provider_job(self, gen_id: str) -> None:
        await self._set_provider_job(gen_id, None, None)

    async def _set_provider_job(
        self, gen_id: str, provider: str | None, job_id: str | None
    ) -> None:
        def save(c: Connection) -> None:
            c.execute(
                update(GEN)
                .where(GEN.c.id == gen_id)
                .values(provider_job_id=job_id, provider_job_provider=provider)
            )

        await self.write(save)


def _apply_event_values(c: Connection, events: Sequence[RunningEvent], now: datetime) -> None:
    """The generation columns the events set (later ones winning): one statement per
    set of columns (``progress``; ``provider, model, route``...), on PostgreSQL with the
    rows in one parameter (:func:`~pixelgate.db.setbased.update_rows`), elsewhere an
    executemany."""
    merged: dict[str, dict[str, Any]] = {}
    for event in events:
        merged.setdefault(event.generation_id, {}).update(event.values)
    postgres = c.dialect.name == "postgresql"
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for gen_id, values in merged.items():
        if postgres:
            row = {"gen_id": gen_id, "updated_at": now, **values}
        else:
            row = {"gen": gen_id, "now": now, **{f"v_{k}": v for k, v in values.items()}}
        groups.setdefault(tuple(sorted(values)), []).append(row)
    for columns, rows in groups.items():
        if postgres:
            update_rows(c, GEN, rows, match=_BY_ID, returning=False)
        else:
            _event_update(columns).run_many(c, rows)


@functools.cache
def _event_update(columns: tuple[str, ...]) -> Prepared:
    """SQLite's update of the generation columns ``columns`` by id, once per set of
    columns (a handful: progress; provider, model, route…)."""
    values = {col: bindparam(f"v_{col}", type_=GEN.c[col].type) for col in columns}
    return Prepared(
        update(GEN)
        .where(GEN.c.id == bindparam("gen", type_=GEN.c.id.type))
        .values(updated_at=bindparam("now", type_=GEN.c.updated_at.type), **values)
    )


_BY_ID = (("gen_id", "id"),)
