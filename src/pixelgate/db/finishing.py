"""The end of a generation: ``SUCCEEDED`` with its images and usage, ``FAILED`` with its
refund, ``CANCELED`` — each one transaction function, group-committed with other jobs'.

A finish writes the job's waiting events (group commit of running events) before its
final one, settles the generations that followed it (dedup cache) and frees its batch
slot, and answers the final view, so a local waiter needs no read.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, delete, func, literal, select, update

from pixelgate.core.models import GenerationView, Status
from pixelgate.core.states import OWNER_ONLY, sources_of
from pixelgate.db.admission import AdmissionStore
from pixelgate.db.followers import settle_followers
from pixelgate.db.ledger import add_usage, refund
from pixelgate.db.prepared import Prepared
from pixelgate.db.records import BATCH, GEN, IMG, NewImage, RunningEvent, generation_view
from pixelgate.db.rows import add_images, event_row, insert_events, pending_values, running_rows
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
) -> Any:
    """``PROCESSING → to`` by compare-and-set (on the lease owner when given); the whole
    row after, or ``None`` when this worker no longer owns the job. The columns of the
    job's pending events are set too; the events themselves are written by
    :func:`_events` with the final one."""
    columns = pending_values(pending) | values
    columns |= {
        "status": to.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "completed_at": now,
        "updated_at": now,
    }
    statement = _final_statement(to, owner is not None, tuple(sorted(columns)))
    params = {f"v_{name}": value for name, value in columns.items()}
    params.setdefault("v_started_at", now)
    return statement.first(c, {**params, "gen_id": gen_id, "owner": owner})


@functools.cache
def _final_statement(to: Status, by_owner: bool, columns: tuple[str, ...]) -> Prepared:
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
    return Prepared(
        update(GEN).where(GEN.c.id == bindparam("gen_id"), *cond).values(values).returning(*GEN.c)
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
    ) -> GenerationView | None:
        """``PROCESSING → SUCCEEDED`` with images and usage, in one transaction; the job's
        ``pending`` events (group commit) are written before its final event.

        Returns the final view, or ``None`` when this worker no longer owns the job.
        """
        now = self.clock()
        values = {
            "progress": 100,
            "provider": provider,
            "model": model,
            "cost_usd": cost_usd,
            "provider_ms": provider_ms,
            "route": route,
            "fallback_image": fallback_image,
        }

        def finish(c: Connection) -> GenerationView | None:
            row = _final(c, gen_id, Status.SUCCEEDED, owner, values, pending, now)
            if row is None:
                return None
            if row.deliveries > 1:  # an earlier run may have stored images before dying
                c.execute(delete(IMG).where(IMG.c.generation_id == gen_id))
            stored = add_images(c, gen_id, account_id, images, now)
            add_usage(
                c,
                account_id,
                provider,
                model,
                now,
                ok=True,
                images=len(images),
                credits=int(row.credits),
                usd=cost_usd,
                provider_ms=provider_ms,
            )
            if row.cache_key is not None:
                settle_followers(
                    c,
                    gen_id,
                    now,
                    images=None if fallback_image else images,
                    provider=provider,
                    model=model,
                    error="ended with the default image" if fallback_image else None,
                )
            self._free_batch_slot(c, row.batch_id)
            data = {"provider": provider, "model": model, "images": len(images)}
            _events(c, gen_id, pending, "succeeded", data, now)
            shown = [SimpleNamespace(**image) for image in stored]
            return generation_view(row, account_name or account_id, shown, self.url_for)

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
                    account_id,
                    provider,
                    model or "",
                    now,
                    ok=False,
                    images=0,
                    credits=0,
                    usd=None,
                    provider_ms=None,
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
