"""The end of a generation: ``SUCCEEDED`` with its images and usage, ``FAILED`` with its
refund, ``CANCELED`` — each one transaction function, group-committed with other jobs'.

A finish writes the job's waiting events (group commit of running events) before its
final one, settles the generations that followed it (dedup cache) and frees its batch
slot, and answers the final view, so a local waiter needs no read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, delete, func, literal, select, update

from pixelgate.core.models import GenerationView, Status
from pixelgate.core.states import OWNER_ONLY, sources_of
from pixelgate.db.admission import AdmissionStore
from pixelgate.db.followers import settle_followers
from pixelgate.db.ledger import add_up_usage, add_usage, add_usages, refund, usage_row
from pixelgate.db.prepared import Prepared
from pixelgate.db.records import BATCH, GEN, IMG, NewImage, RunningEvent, generation_view
from pixelgate.db.rows import (
    add_images,
    event_row,
    image_rows,
    insert_events,
    insert_images,
    pending_values,
    running_rows,
)
from pixelgate.db.setbased import update_rows
from pixelgate.errors import Conflict

__all__ = ["FinishStore"]

#: a status only ever seen inside one transaction (see ``_free_batch_slot``)
_REQUEUE = "_REQUEUE"


def _final(
    c: Connection,
    gen_id: str,
    to: Status,
    owner: str | None,
    values: dict[str, Any],
    pending: Sequence[RunningEvent],
    now: datetime,
    omit: tuple[str, ...] = (),
) -> Any:
    """``PROCESSING → to`` by compare-and-set (on the lease owner when given); the row
    after (without the ``omit`` columns, which the caller knows), or ``None`` when this
    worker no longer owns the job. The columns of the job's pending events are set too;
    the events themselves are written by :func:`_events` with the final one."""
    columns = pending_values(pending) | values
    columns |= {
        "status": to.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "completed_at": now,
        "updated_at": now,
    }
    statement = _final_statement(to, owner is not None, tuple(sorted(columns)), omit)
    params = {f"v_{name}": value for name, value in columns.items()}
    params.setdefault("v_started_at", now)
    return statement.first(c, {**params, "gen_id": gen_id, "owner": owner})


@functools.cache
def _final_statement(
    to: Status, by_owner: bool, columns: tuple[str, ...], omit: tuple[str, ...] = ()
) -> Prepared:
    """The finishing UPDATE for a set of columns, built once per shape: construction and
    cache-key generation cost more than the execution (a job's finish runs it)."""
    sources = sources_of(to)
    if not by_owner:
        sources = tuple(s for s in sources if (Status(s), to) not in OWNER_ONLY)
    # one bound value per status, not an "expanding" IN that is rewritten on every run
    cond: list[ColumnElement[bool]] = [GEN.c.status.in_([literal(s) for s in sources])]
    if by_owner:
        # a handed-over job still PENDING may end here, but only by its lease owner
        cond.append(GEN.c.lease_owner == bindparam("owner"))
    values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in columns}
    # a job quicker than its first event flush starts and ends in this statement
    started = bindparam("v_started_at", type_=GEN.c.started_at.type)
    values["started_at"] = func.coalesce(GEN.c.started_at, started)
    returned = [column for column in GEN.c if column.name not in omit]
    return Prepared(
        update(GEN)
        .where(GEN.c.id == bindparam("gen_id"), *cond)
        .values(values)
        .returning(*returned)
    )


def _events(
    c: Connection,
    gen_id: str,
    pending: Sequence[RunningEvent],
    final: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    """The job's waiting events, then its final one, in one statement (ids in that order)."""
    insert_events(c, [*running_rows(pending, now), event_row(gen_id, final, data, now)])


class FinishStore(AdmissionStore):
    """Terminal states of generations and batches."""

    async def finish_succeeded(
        self,
        gen_id: str,
        owner: str,
        *,
        provider: str,
        model: str,
        images: Sequence[NewImage],
        cost_usd: Decimal | None,
        provider_ms: int | None,
        route: list[dict[str, Any]],
        account_id: str,
        fallback_image: bool = False,
        pending: Sequence[RunningEvent] = (),
        account_name: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> GenerationView | None:
        """``PROCESSING → SUCCEEDED`` with images and usage, in one transaction; the job's
        ``pending`` events (group commit) are written before its final event. The
        finishes of one group commit share their statements (:func:`_succeeded_together`).
        With the job's stored ``request`` given, the row is not read back with it (nor
        with the route, which the finish writes): decoding those JSON columns was most
        of the finishing ``UPDATE … RETURNING``'s cost.

        Returns the final view, or ``None`` when this worker no longer owns the job.
        """
        finish = _Succeeded(
            store=self,
            gen_id=gen_id,
            owner=owner,
            provider=provider,
            model=model,
            images=images,
            cost_usd=cost_usd,
            provider_ms=provider_ms,
            route=route,
            account_id=account_id,
            fallback_image=fallback_image,
            pending=pending,
            account_name=account_name or account_id,
            now=self.clock(),
            together=_succeeded_together,
            request=request,
        )
        view: GenerationView | None = await self.write(finish)
        return view

    async def finish_failed(
        self,
        gen_id: str,
        owner: str | None,
        *,
        code: str,
        message: str,
        route: list[dict[str, Any]],
        account_id: str,
        provider: str | None = None,
        model: str | None = None,
        pending: Sequence[RunningEvent] = (),
        account_name: str | None = None,
    ) -> GenerationView | None:
        """``PROCESSING → FAILED`` with the refund (at most once), in one transaction (with
        the job's ``pending`` events before its final one)."""
        now = self.clock()
        values = {
            "error_code": code,
            "error_message": message,
            "route": route,
            "provider": provider,
            "model": model,
        }

        def finish(c: Connection) -> GenerationView | None:
            row = _final(c, gen_id, Status.FAILED, owner, values, pending, now)
            if row is None:
                return None
            refunded = refund(c, gen_id, f"generation failed: {code}", now)
            if row.cache_key is not None:
                settle_followers(c, gen_id, now, error=f"failed ({code}: {message})")
            self._free_batch_slot(c, row.batch_id)
            if provider:
                add_usage(
                    c,
                    usage_row(
                        account_id,
                        provider,
                        model or "",
                        now,
                        ok=False,
                        images=0,
                        credits=0,
                        usd=None,
                        provider_ms=None,
                    ),
                )
            data = {"code": code, "message": message, "refunded_credits": refunded}
            _events(c, gen_id, pending, "failed", data, now)
            return self._view_with_images(c, row, account_name or account_id)

        view: GenerationView | None = await self.write(finish)
        return view

    async def finish_canceled(
        self,
        gen_id: str,
        owner: str,
        *,
        route: list[dict[str, Any]],
        pending: Sequence[RunningEvent] = (),
        account_name: str | None = None,
    ) -> GenerationView | None:
        """``PROCESSING → CANCELED`` by the worker that saw the cancel request."""
        now = self.clock()
        values = {
            "error_code": "canceled",
            "error_message": "canceled while running",
            "route": route,
        }

        def finish(c: Connection) -> GenerationView | None:
            row = _final(c, gen_id, Status.CANCELED, owner, values, pending, now)
            if row is None:
                return None
            refunded = refund(c, gen_id, "canceled while running", now)
            if row.cache_key is not None:
                settle_followers(c, gen_id, now, error="was canceled")
            self._free_batch_slot(c, row.batch_id)
            _events(c, gen_id, pending, "canceled", {"refunded_credits": refunded}, now)
            return self._view_with_images(c, row, account_name or row.account_id)

        view: GenerationView | None = await self.write(finish)
        return view

    def _view_with_images(self, c: Connection, row: Any, account_name: str) -> GenerationView:
        images = c.execute(
            select(IMG).where(IMG.c.generation_id == row.id).order_by(IMG.c.index)
        ).all()
        return generation_view(row, account_name, images, self.url_for)

    async def cancel(self, gen_id: str, *, account_id: str | None) -> tuple[GenerationView, bool]:
        """Cancel: a PENDING job ends now (refunded); a PROCESSING one is flagged for its worker.

        Returns the generation and whether it ended now (False: only flagged).
        """
        now = self.clock()
        await self.get_generation(gen_id, account_id=account_id)  # ownership → NotFound

        def cancel(c: Connection) -> bool:
            status = c.scalar(select(GEN.c.status).where(GEN.c.id == gen_id))
            if status == Status.PENDING.value:
                c.execute(
                    update(GEN)
                    .where(GEN.c.id == gen_id)
                    .values(
                        status=Status.CANCELED.value,
                        completed_at=now,
                        updated_at=now,
                        error_code="canceled",
                        error_message="canceled before it started",
                    )
                )
                refunded = refund(c, gen_id, "canceled before start", now)
                settle_followers(c, gen_id, now, error="was canceled")
                data = {"refunded_credits": refunded}
                insert_events(c, [event_row(gen_id, "canceled", data, now)])
                return True
            if status == Status.PROCESSING.value:
                c.execute(
                    update(GEN)
                    .where(GEN.c.id == gen_id)
                    .values(cancel_requested=True, updated_at=now)
                )
                return False
            raise Conflict(f"generation is already {status}", code="already_finished")

        ended: bool = await self.write(cancel)
        return await self.get_generation(gen_id), ended

    async def cancel_batch(
        self, batch_id: str, *, account_id: str | None
    ) -> tuple[list[str], list[str]]:
        """Cancel a batch: PENDING members end now (refunded), PROCESSING ones are flagged
        for their workers. Returns ``(canceled_ids, flagged_ids)``."""
        now = self.clock()
        await self.get_batch(batch_id, account_id=account_id)  # ownership → NotFound

        def cancel(c: Connection) -> tuple[list[str], list[str]]:
            # members first, the batch row last: the claim locks them in the same order
            canceled = list(
                c.scalars(
                    update(GEN)
                    .where(GEN.c.batch_id == batch_id, GEN.c.status == Status.PENDING.value)
                    .values(
                        status=Status.CANCELED.value,
                        error_code="canceled",
                        error_message="canceled before it started (batch canceled)",
                        completed_at=now,
                        updated_at=now,
                    )
                    .returning(GEN.c.id)
                )
            )
            for gen_id in canceled:
                refunded = refund(c, gen_id, "batch canceled before start", now)
                data = {"refunded_credits": refunded, "batch_id": batch_id}
                insert_events(c, [event_row(gen_id, "canceled", data, now)])
                settle_followers(c, gen_id, now, error="was canceled")
            flagged = list(
                c.scalars(
                    update(GEN)
                    .where(GEN.c.batch_id == batch_id, GEN.c.status == Status.PROCESSING.value)
                    .values(cancel_requested=True, updated_at=now)
                    .returning(GEN.c.id)
                )
            )
            c.execute(
                update(BATCH)
                .where(BATCH.c.id == batch_id, BATCH.c.canceled_at.is_(None))
                .values(canceled_at=now)
            )
            return canceled, flagged

        result: tuple[list[str], list[str]] = await self.write(cancel)
        return result

    async def attach_fallback_image(
        self, gen_id: str, owner: str, image: NewImage, *, account_id: str
    ) -> bool:
        """Attach the default image to a running job about to fail (seed 001's fallback)."""
        now = self.clock()

        def attach(c: Connection) -> bool:
            row = c.execute(
                update(GEN)
                .where(
                    GEN.c.id == gen_id,
                    GEN.c.lease_owner == owner,
                    # running, or handed over at admission and not flushed yet
                    GEN.c.status.in_((Status.PENDING.value, Status.PROCESSING.value)),
                )
                .values(fallback_image=True, updated_at=now)
                .returning(GEN.c.id)
            ).first()
            if row is None:
                return False
            c.execute(delete(IMG).where(IMG.c.generation_id == gen_id))
            add_images(c, gen_id, account_id, [image], now)
            return True

        attached: bool = await self.write(attach)
        return attached

    def _free_batch_slot(self, c: Connection, batch_id: str | None) -> None:
        """A running member of batch ``batch_id`` ended: announce waiting members to the
        queue engine (nothing to do for a generation outside a batch).

        On PostgreSQL a trigger hands every row that *becomes* PENDING to the queue
        engine; a member refused a slot (its batch was full) got no job afterwards. Here,
        in the finishing transaction, up to the free slots' worth of waiting members go
        PENDING → _REQUEUE → PENDING (never visible outside this transaction), which
        fires the trigger again. A duplicate delivery is a no-op claim. The polling
        worker of SQLite needs none of this.
        """
        if batch_id is None or not self.postgres:
            return
        limit = c.scalar(select(BATCH.c.concurrency).where(BATCH.c.id == batch_id))
        if limit is None:
            return
        running = c.scalar(
            select(func.count()).where(
                GEN.c.batch_id == batch_id, GEN.c.status == Status.PROCESSING.value
            )
        )
        room = int(limit) - int(running or 0)
        if room <= 0:
            return
        waiting = list(
            c.scalars(
                select(GEN.c.id)
                .where(
                    GEN.c.batch_id == batch_id,
                    GEN.c.status == Status.PENDING.value,
                    GEN.c.cached_from.is_(None),
                )
                .order_by(GEN.c.run_after, GEN.c.id)
                .limit(room)
            )
        )
        for source, target in ((Status.PENDING.value, _REQUEUE), (_REQUEUE, Status.PENDING.value)):
            if waiting:
                c.execute(
                    update(GEN)
                    .where(GEN.c.id.in_(waiting), GEN.c.status == source)
                    .values(status=target)
                )


@dataclass(eq=False)
class _Succeeded:
    """One job's ``SUCCEEDED`` finish: a transaction function, and the values the
    set-based form of a group commit's finishes (:func:`_succeeded_together`) takes."""

    store: FinishStore
    gen_id: str
    owner: str
    provider: str
    model: str
    images: Sequence[NewImage]
    cost_usd: Decimal | None
    provider_ms: int | None
    route: list[dict[str, Any]]
    account_id: str
    fallback_image: bool
    pending: Sequence[RunningEvent]
    account_name: str
    now: datetime
    #: the group commit runs a batch's finishes through it together
    together: Callable[[Connection, list[Any]], list[Any]] | None
    #: the job's stored request, when the caller holds it (then not read back)
    request: dict[str, Any] | None = None

    @property
    def omit(self) -> tuple[str, ...]:
        """The columns the finishing UPDATE need not return: known here."""
        return _KNOWN_AT_FINISH if self.request is not None else ()

    def __call__(self, c: Connection) -> GenerationView | None:
        row = self.update(c)
        return None if row is None else self.after_update(c, row)

    def update(self, c: Connection) -> Any:
        """The finishing UPDATE alone: the row after, or ``None`` (not this owner's)."""
        return _final(
            c, self.gen_id, Status.SUCCEEDED, self.owner, self.values(), (), self.now, self.omit
        )

    def values(self) -> dict[str, Any]:
        """The generation columns the finish sets (its waiting events' included)."""
        return pending_values(self.pending) | {
            "progress": 100,
            "provider": self.provider,
            "model": self.model,
            "cost_usd": self.cost_usd,
            "provider_ms": self.provider_ms,
            "route": self.route,
            "fallback_image": self.fallback_image,
        }

    def after_update(self, c: Connection, row: Any) -> GenerationView:
        """Everything after the finishing UPDATE, one statement at a time."""
        if row.deliveries > 1:  # an earlier run may have stored images before dying
            c.execute(delete(IMG).where(IMG.c.generation_id == self.gen_id))
        stored = add_images(c, self.gen_id, self.account_id, self.images, self.now)
        add_usage(c, self.usage(row))
        if row.cache_key is not None:
            settle_followers(
                c,
                self.gen_id,
                self.now,
                images=None if self.fallback_image else self.images,
                provider=self.provider,
                model=self.model,
                error="ended with the default image" if self.fallback_image else None,
            )
        self.store._free_batch_slot(c, row.batch_id)
        insert_events(c, self.events())
        return self.view(row, stored)

    def usage(self, row: Any) -> dict[str, Any]:
        """The job's :func:`usage_row` (``row``: the finished generation's)."""
        return usage_row(
            self.account_id,
            self.provider,
            self.model,
            self.now,
            ok=True,
            images=len(self.images),
            credits=int(row.credits),
            usd=self.cost_usd,
            provider_ms=self.provider_ms,
        )

    def events(self) -> list[dict[str, Any]]:
        """The job's waiting events, then its final one (ids in that order)."""
        data = {"provider": self.provider, "model": self.model, "images": len(self.images)}
        final = event_row(self.gen_id, "succeeded", data, self.now)
        return [*running_rows(self.pending, self.now), final]

    def view(self, row: Any, stored: list[dict[str, Any]]) -> GenerationView:
        shown = [SimpleNamespace(**image) for image in stored]
        if self.request is None:
            return generation_view(row, self.account_name, shown, self.store.url_for)
        return generation_view(
            row,
            self.account_name,
            shown,
            self.store.url_for,
            request=self.request,
            route=self.route,
        )


#: the generation's columns a successful finish knows without reading them back: the
#: request (the job holds it) and the route (the finish writes it)
_KNOWN_AT_FINISH = ("request", "route")
#: what a successful finish may leave (the lease owner's compare-and-set)
_SUCCEEDED_FROM = (GEN.c.status.in_([literal(s) for s in sources_of(Status.SUCCEEDED)]),)
_BY_OWNER = (("gen_id", "id"), ("owner", "lease_owner"))
_CLOSED = {"status": Status.SUCCEEDED.value, "lease_owner": None, "lease_expires_at": None}


def _succeeded_together(c: Connection, finishes: list[_Succeeded]) -> list[GenerationView | None]:
    """A group commit's successful finishes, their statements shared: one INSERT each
    for all their images, usage (summed per account, day and model first: one upsert
    cannot change a row twice) and events — on PostgreSQL one UPDATE for all their
    rows too; on SQLite (no set-based UPDATE … FROM of many rows in one parameter) an
    UPDATE each — instead of four statements per job. What each job gets is what
    :meth:`_Succeeded.__call__` gives it; a job with more to do (a redelivery's old
    images, cache followers, a batch slot) does that rest one statement at a time. A
    statement that fails fails the batch's savepoint, and the group commit runs every
    function alone (:func:`pixelgate.db.engine._one_by_one`): a job's error stays its own.
    """
    if len({f.gen_id for f in finishes}) < len(finishes):
        return [finish(c) for finish in finishes]  # one row cannot be finished twice at once
    postgres = c.dialect.name == "postgresql"
    updated = _update_all(c, finishes) if postgres else {}
    views: list[GenerationView | None] = []
    images: list[dict[str, Any]] = []
    usage: dict[tuple[str, ...], dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    for finish in finishes:
        row = updated.get(finish.gen_id) if postgres else finish.update(c)
        if row is None:
            views.append(None)
        elif row.deliveries > 1 or row.cache_key is not None or row.batch_id is not None:
            views.append(finish.after_update(c, row))
        else:
            stored = image_rows(finish.gen_id, finish.account_id, finish.images, finish.now)
            images.extend(stored)
            add_up_usage(usage, finish.usage(row))
            events.extend(finish.events())
            views.append(finish.view(row, stored))
    insert_images(c, images)
    add_usages(c, usage)
    insert_events(c, events)
    return views


def _update_all(c: Connection, finishes: list[_Succeeded]) -> dict[str, Any]:
    """The finishing UPDATE of every job at once (PostgreSQL): the rows after, by id."""
    shapes: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}
    for finish in finishes:
        values = {
            **finish.values(),
            **_CLOSED,
            "completed_at": finish.now,
            "updated_at": finish.now,
        }
        values.setdefault("started_at", finish.now)
        params = {"gen_id": finish.gen_id, "owner": finish.owner, **values}
        shapes.setdefault((tuple(sorted(params)), finish.omit), []).append(params)
    updated: dict[str, Any] = {}
    for (_, omit), rows in shapes.items():
        found = update_rows(
            c,
            GEN,
            rows,
            match=_BY_OWNER,
            condition=_SUCCEEDED_FROM,
            keep_first=("started_at",),
            omit=omit,
        )
        updated.update((row.id, row) for row in found)
    return updated
