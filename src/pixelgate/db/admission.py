"""Admission: a request becomes a generation, its first events and its debit, in one
transaction function, group-committed with other admissions (:mod:`pixelgate.db.writer`).

A job admitted while this process's worker has room is admitted already leased to it
(``lease_to``): still ``PENDING`` (queued), but under the worker's lease, so no claim
takes it while the lease lives. The worker gets it from memory, with no claim and no
poll; the row turns ``PROCESSING`` with the job's first running events (or ends
straight from ``PENDING`` at its finish, for a job quicker than that). Anything else is
admitted unleased for a claim.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from pixelgate.core.ids import new_id
from pixelgate.core.models import GenerationView, Status
from pixelgate.db.admit_together import PlainAdmission
from pixelgate.db.billing import (
    LockedAccount,
    Quota,
    QuotaState,
    check_budget,
    check_quota,
    lock_account,
    quota_state,
)
from pixelgate.db.engine import TxFunction, dispatch
from pixelgate.db.followers import CacheMatch, add_links_and_cache, cache_match
from pixelgate.db.ledger import LEDGER, debit, ledger_row
from pixelgate.db.prepared import Prepared
from pixelgate.db.reads import ReadStore
from pixelgate.db.records import (
    BATCH,
    GEN,
    AdmitResult,
    BatchView,
    CacheLookup,
    ClaimedJob,
    NewGeneration,
    generation_view,
)
from pixelgate.db.rows import event_row, insert_events
from pixelgate.errors import Conflict, InsufficientCredits, RateLimited

__all__ = ["AdmissionStore"]

_INSERT_GENERATION = Prepared(insert(GEN))
_INSERT_LEDGER = Prepared(insert(LEDGER))


@dataclass(frozen=True)
class _Admitted:
    remaining: int | None
    quota: QuotaState | None
    #: the row as inserted, when nothing else changed it in the transaction
    row: dict[str, Any] | None


@dataclass(frozen=True)
class _MemberPlan:
    credits: int
    estimated_usd: Decimal | None
    match: CacheMatch | None


def new_generation(
    gen_id: str,
    *,
    account_id: str,
    project: str,
    prompt: str,
    request: dict[str, Any],
    request_hash: str,
    source: str,
    credits: int,
    estimated_usd: Decimal | None,
    request_id: str | None,
    now: datetime,
    idempotency_key: str | None = None,
    cache_key: str | None = None,
    batch_id: str | None = None,
    lease: tuple[str, datetime] | None = None,
) -> dict[str, Any]:
    """Every column of a new generation row: what is inserted is also what is answered."""
    return {
        "id": gen_id,
        "account_id": account_id,
        "project": project,
        "source": source,
        "status": Status.PENDING.value,
        "progress": 0,
        "prompt": prompt,
        "request": request,
        "request_hash": request_hash,
        "idempotency_key": idempotency_key,
        "request_id": request_id,
        "provider": None,
        "model": None,
        "provider_job_id": None,
        "provider_job_provider": None,
        "route": [],
        "retry_count": 0,
        "last_retry_at": None,
        "error_code": None,
        "error_message": None,
        "fallback_image": False,
        "credits": credits,
        "estimated_usd": estimated_usd,
        "cost_usd": None,
        "provider_ms": None,
        "lease_owner": lease[0] if lease else None,
        "lease_expires_at": lease[1] if lease else None,
        "run_after": now,
        "deliveries": 1 if lease else 0,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "completed_at": None,
        "batch_id": batch_id,
        "cache_key": cache_key,
        "cached_from": None,
    }


class AdmissionStore(ReadStore):
    """Admits generations and batches: all of a request's rows and its debit, or nothing."""

    async def admit(
        self,
        *,
        account_id: str,
        project: str,
        prompt: str,
        request: dict[str, Any],
        request_hash: str,
        source: str,
        credits: int,
        estimated_usd: Decimal | None,
        idempotency_key: str | None,
        request_id: str | None,
        quota: Quota | None = None,
        cache: CacheLookup | None = None,
        entities: Sequence[tuple[str, str]] = (),
        account_name: str | None = None,
        lease_to: str | None = None,
        lease_s: float = 30.0,
    ) -> AdmitResult:
        """Create the generation, its first events and its debit in one transaction.

        Returns the existing generation when ``idempotency_key`` was used before
        with the same request; raises ``Conflict`` if it was used with another one.
        With ``cache``, an identical earlier result is copied (the generation is
        SUCCEEDED at once) or a running identical one is followed, for ``cache.credits``.
        With ``lease_to`` (and no cache match), the job is admitted leased to that worker
        and returned as ``AdmitResult.job``.
        """
        idempotency_key = idempotency_key or None  # "" is no key, for the look-up and the row
        if idempotency_key:
            existing = await self._by_idempotency(account_id, idempotency_key)
            if existing is not None:
                return self._replay(existing, request_hash)
        now = self.clock()
        gen_id = new_id("gen")
        if cache is not None and cache.use:
            lease_to = None  # the cache may serve it or park it behind another: no lease
        lease = (lease_to, now + timedelta(seconds=lease_s)) if lease_to else None
        row = new_generation(
            gen_id,
            account_id=account_id,
            project=project,
            prompt=prompt,
            request=request,
            request_hash=request_hash,
            source=source,
            credits=credits,
            estimated_usd=estimated_usd,
            request_id=request_id,
            now=now,
            idempotency_key=idempotency_key,
            cache_key=cache.key if cache else None,
            lease=lease,
        )

        def admit(c: Connection) -> _Admitted:
            # other admissions of the account matter only with a quota, a balance, a
            # budget or the cache; an unmetered account's admissions run in parallel
            locked = lock_account(
                c, account_id, always=quota is not None or (cache is not None and cache.use)
            )
            match = cache_match(c, account_id, cache) if cache else None
            values = row
            if match is not None and cache is not None:
                values = {**row, "credits": cache.credits, "estimated_usd": Decimal("0")}
            quota_after = check_quota(c, account_id, quota, now) if quota is not None else None
            check_budget(c, locked, account_id, values["estimated_usd"], now)
            remaining = debit(c, locked, account_id, values["credits"])
            _INSERT_GENERATION.run(c, values)
            insert_events(c, [event_row(gen_id, "queued", {}, now)])
            # a free cache hit is no debit at all
            if remaining is not None and (values["credits"] > 0 or match is None):
                _INSERT_LEDGER.run(
                    c,
                    ledger_row(account_id, gen_id, "debit", -values["credits"], "generation", now),
                )
            if match is None and lease is None:
                dispatch(c, [gen_id])  # runnable: the queue engine hears of it
            if match is not None or entities:
                add_links_and_cache(
                    c,
                    gen_id,
                    account_id,
                    cache=cache,
                    match=match,
                    entities=entities,
                    credits=values["credits"],
                    now=now,
                )
            return _Admitted(remaining, quota_after, values if match is None else None)

        fn: TxFunction = admit
        if self.postgres and quota is None and cache is None and not entities:
            # the batch's plain admissions share their statements (set-based)
            answer = functools.partial(_Admitted, quota=None, row=row)
            fn = PlainAdmission(admit, account_id, row, lease is None, answer)
        try:
            admitted: _Admitted = await self.write(fn)
        except IntegrityError:
            if idempotency_key:
                existing = await self._by_idempotency(account_id, idempotency_key)
                if existing is not None:
                    return self._replay(existing, request_hash)
            raise
        if admitted.row is not None and account_name is not None:
            # the answer is built from what was inserted: no read-back
            view = generation_view(SimpleNamespace(**admitted.row), account_name, [], self.url_for)
        else:
            view = await self.get_generation(gen_id)
        job = None
        if lease is not None and admitted.row is not None:
            job = ClaimedJob(
                id=gen_id,
                account_id=account_id,
                account_name=account_name or account_id,
                project=project,
                request=request,
                created_at=now,
                provider_job_id=None,
                provider_job_provider=None,
                deliveries=1,
                handed_over=True,
            )
        return AdmitResult(
            generation=view,
            created=True,
            credits_remaining=admitted.remaining,
            quota=admitted.quota,
            job=job,
        )

    def _replay(self, existing: tuple[GenerationView, str], request_hash: str) -> AdmitResult:
        view, stored_hash = existing
        if stored_hash != request_hash:
            raise Conflict(
                "Idempotency-Key was already used with a different request",
                code="idempotency_key_reused",
            )
        return AdmitResult(generation=view, created=False, credits_remaining=None)

    async def _by_idempotency(self, account_id: str, key: str) -> tuple[GenerationView, str] | None:
        query = select(GEN.c.id, GEN.c.request_hash).where(
            GEN.c.account_id == account_id, GEN.c.idempotency_key == key
        )
        row = await self.read(lambda c: c.execute(query).first())
        if row is None:
            return None
        return await self.get_generation(row[0]), row[1]

    # Batches -----------------------------------------------------------------

    async def admit_batch(
        self,
        *,
        account_id: str,
        members: Sequence[NewGeneration],
        concurrency: int | None,
        metadata: dict[str, Any],
        source: str,
        request_id: str | None,
        quota: Quota | None = None,
        idempotency_key: str | None = None,
        request_hash: str = "",
    ) -> BatchView:
        """Admit every member or none, in one transaction: quota, budget, one balance check
        for the total, then each generation with its own debit and first event.

        With ``idempotency_key`` used before by the account, returns that batch
        (``replayed``) when ``request_hash`` matches, else raises ``Conflict``.

        Raises:
            InsufficientCredits, BudgetExceeded, RateLimited: nothing is written.
        """
        idempotency_key = idempotency_key or None
        now = self.clock()
        batch_id = new_id("bat")

        def by_key(c: Connection) -> Any:
            return c.execute(
                select(BATCH.c.id, BATCH.c.request_hash).where(
                    BATCH.c.account_id == account_id, BATCH.c.idempotency_key == idempotency_key
                )
            ).first()

        def admit(c: Connection) -> Any:
            locked = lock_account(c, account_id)
            replay = by_key(c) if idempotency_key else None
            if replay is None:
                self._insert_batch(
                    c,
                    batch_id,
                    locked=locked,
                    account_id=account_id,
                    members=members,
                    concurrency=concurrency,
                    metadata=metadata,
                    source=source,
                    request_id=request_id,
                    quota=quota,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    now=now,
                )
            return replay

        try:
            replay = await self.write(admit)
        except IntegrityError:
            if not idempotency_key:
                raise
            replay = await self.read(by_key)
            if replay is None:
                raise
        if replay is not None:
            if replay[1] != request_hash:
                raise Conflict(
                    "Idempotency-Key was already used with a different request",
                    code="idempotency_key_reused",
                )
            view = await self.get_batch(replay[0], account_id=account_id)
            return replace(view, replayed=True)
        return await self.get_batch(batch_id, account_id=account_id)

    def _insert_batch(
        self,
        c: Connection,
        batch_id: str,
        *,
        locked: LockedAccount,
        account_id: str,
        members: Sequence[NewGeneration],
        concurrency: int | None,
        metadata: dict[str, Any],
        source: str,
        request_id: str | None,
        quota: Quota | None,
        idempotency_key: str | None,
        request_hash: str,
        now: datetime,
    ) -> None:
        plans = _plan_members(c, account_id, members)
        if quota is not None:
            state = quota_state(c, account_id, quota, now)
            if state.remaining < len(members):
                raise RateLimited(
                    f"Rate limit exceeded for your tier: this batch needs {len(members)} "
                    f"generations, {state.remaining} are left in the window "
                    f"({quota.limit} per {quota.window_s} s)",
                    retry_after=max(1.0, (state.reset_at - now).total_seconds()),
                    limit=quota.limit,
                    remaining=state.remaining,
                    reset_at=state.reset_at.timestamp(),
                )
        usd = [p.estimated_usd for p in plans if p.estimated_usd is not None]
        check_budget(c, locked, account_id, sum(usd, Decimal("0")) if usd else None, now)
        total = sum(p.credits for p in plans)
        try:
            remaining = debit(c, locked, account_id, total)
        except InsufficientCredits as exc:
            raise InsufficientCredits(
                f"this batch costs {total} credits; the balance is {exc.balance}",
                balance=exc.balance,
                price=total,
            ) from None
        c.execute(
            insert(BATCH),
            {
                "id": batch_id,
                "account_id": account_id,
                "concurrency": concurrency,
                "size": len(members),
                "source": source,
                "metadata": metadata,
                "request_id": request_id,
                "idempotency_key": idempotency_key,
                "request_hash": request_hash,
                "created_at": now,
            },
        )
        for member, plan in zip(members, plans, strict=True):
            gen_id = new_id("gen")
            _INSERT_GENERATION.run(
                c,
                new_generation(
                    gen_id,
                    account_id=account_id,
                    project=member.project,
                    prompt=member.prompt,
                    request=member.request,
                    request_hash=member.request_hash,
                    source=source,
                    credits=plan.credits,
                    estimated_usd=plan.estimated_usd,
                    request_id=request_id,
                    now=now,
                    cache_key=member.cache.key if member.cache else None,
                    batch_id=batch_id,
                ),
            )
            insert_events(c, [event_row(gen_id, "queued", {}, now)])
            if remaining is not None and (plan.credits > 0 or plan.match is None):
                reason = f"generation (batch {batch_id})"
                _INSERT_LEDGER.run(
                    c, ledger_row(account_id, gen_id, "debit", -plan.credits, reason, now)
                )
            if plan.match is None:
                dispatch(c, [gen_id])
            add_links_and_cache(
                c,
                gen_id,
                account_id,
                cache=member.cache,
                match=plan.match,
                entities=member.entities,
                credits=plan.credits,
                now=now,
            )


def _plan_members(
    c: Connection, account_id: str, members: Sequence[NewGeneration]
) -> list[_MemberPlan]:
    """Price each member, with the cache: a hit or follower costs the cache price."""
    plans: list[_MemberPlan] = []
    leaders: dict[str, str] = {}  # cache key → the member index leading it, as a marker
    for index, member in enumerate(members):
        cache = member.cache
        match = cache_match(c, account_id, cache) if cache else None
        if cache is not None and match is None:
            if cache.use and cache.key in leaders:
                match = CacheMatch(source_id=leaders[cache.key], done=False)
            else:
                leaders.setdefault(cache.key, f"#{index}")
        if match is not None and cache is not None:
            plans.append(_MemberPlan(cache.credits, Decimal("0"), match))
        else:
            plans.append(_MemberPlan(member.credits, member.estimated_usd, None))
    return plans
