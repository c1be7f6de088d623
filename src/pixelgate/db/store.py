"""All SQL of pixelgate: accounts, keys, generations (and their queue columns), events, ledger.

Every state change of a generation is a compare-and-set guarded by
:mod:`pixelgate.core.states`, so a duplicate delivery or a late worker is a no-op.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pixelgate.core.ids import new_id
from pixelgate.core.models import AccountView, EventView, GenerationView, ImageView, Status
from pixelgate.core.states import sources_of
from pixelgate.db.billing import Quota, QuotaState, check_budget, check_quota, lock_account
from pixelgate.db.engine import Database
from pixelgate.db.tables import Account, ApiKey, Event, Generation, Image, LedgerEntry, UsageDaily
from pixelgate.errors import Conflict, InsufficientCredits, NotFound, ValidationFailed

__all__ = ["AdmitResult", "ClaimedJob", "KeyInfo", "NewImage", "Store", "hash_key"]

KEY_PREFIX = "pg_"


def utcnow() -> datetime:
    return datetime.now(UTC)


def hash_key(plain: str) -> str:
    """SHA-256 of an API key. Keys carry 256 random bits, so a fast hash is safe."""
    return hashlib.sha256(plain.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    account_id: str
    account_name: str
    is_admin: bool


@dataclass(frozen=True)
class AdmitResult:
    generation: GenerationView
    created: bool
    credits_remaining: int | None
    quota: QuotaState | None = None


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    account_id: str
    account_name: str
    project: str
    request: dict[str, Any]
    created_at: datetime
    provider_job_id: str | None
    provider_job_provider: str | None
    deliveries: int


@dataclass(frozen=True)
class NewImage:
    index: int
    key: str
    width: int
    height: int
    format: str
    content_type: str
    bytes: int
    sha256: str
    attribution: dict[str, Any] | None = None


def _account_view(row: Account) -> AccountView:
    return AccountView(
        id=row.id,
        name=row.name,
        tier=row.tier,
        credits=row.credits,
        created_at=row.created_at,
        preferred_providers=list(row.preferred_providers or []),
        credit_policy=row.credit_policy,
        daily_budget_usd=row.daily_budget_usd,
        email=row.email,
        webhook_url=row.webhook_url,
        disabled=row.disabled,
        settings=dict(row.settings or {}),
    )


class Store:
    """Repository over :class:`Database`; the only place that writes SQL."""

    def __init__(
        self, db: Database, *, url_for: Any = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.db = db
        #: the time source; tests freeze it to prove windows and midnights
        self.clock = clock or utcnow
        # url_for(key) -> str, set by the runtime so views carry image URLs
        self.url_for = url_for or (lambda key: f"/files/{key}")

    # Accounts and keys -------------------------------------------------------

    async def create_account(
        self,
        name: str,
        *,
        tier: str = "FREE",
        credits: int | None = None,
        actor: str = "system",
        credit_policy: str = "refund",
        email: str | None = None,
    ) -> AccountView:
        now = self.clock()
        row = Account(
            id=new_id("acct"),
            name=name,
            tier=tier.upper(),
            credits=credits,
            credit_policy=credit_policy,
            email=email,
            preferred_providers=[],
            settings={},
            created_at=now,
        )
        try:
            async with self.db.write() as s:
                s.add(row)
                await s.flush()
                if credits:
                    s.add(
                        LedgerEntry(
                            account_id=row.id,
                            kind="grant",
                            credits=credits,
                            reason="initial credits",
                            actor=actor,
                            created_at=now,
                        )
                    )
        except IntegrityError:
            raise Conflict(f"account {name!r} already exists", code="account_exists") from None
        return _account_view(row)

    async def ensure_account(self, name: str) -> AccountView:
        existing = await self.find_account(name)
        if existing is not None:
            return existing
        try:
            return await self.create_account(name, tier="INTERNAL")
        except Conflict:
            found = await self.find_account(name)
            assert found is not None
            return found

    async def find_account(self, name: str) -> AccountView | None:
        async with self.db.read() as s:
            row = await s.scalar(select(Account).where(Account.name == name))
            return _account_view(row) if row else None

    async def get_account(self, account_id: str) -> AccountView:
        async with self.db.read() as s:
            row = await s.get(Account, account_id)
            if row is None:
                raise NotFound("account not found")
            return _account_view(row)

    async def update_account(self, account_id: str, **fields: Any) -> AccountView:
        """Change account settings (tier, budget, preferences, policy, e-mail, webhook…)."""
        allowed = {"tier", "daily_budget_usd", "preferred_providers", "credit_policy", "email",
                   "webhook_url", "disabled", "settings"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValidationFailed(sorted(unknown)[0], "cannot be changed")
        async with self.db.write() as s:
            row = await s.get(Account, account_id)
            if row is None:
                raise NotFound("account not found")
            for name, value in fields.items():
                setattr(row, name, value.upper() if name == "tier" else value)
            await s.flush()
            return _account_view(row)

    async def list_accounts(self) -> list[AccountView]:
        async with self.db.read() as s:
            rows = await s.scalars(select(Account).order_by(Account.created_at))
            return [_account_view(r) for r in rows]

    async def create_key(
        self,
        account_id: str,
        *,
        is_admin: bool = False,
        name: str | None = None,
        plain: str | None = None,
    ) -> tuple[str, str]:
        """Create a key; returns ``(key_id, plain_key)``. The plain key is never stored."""
        plain = plain or generate_key()
        key_id = new_id("key")
        async with self.db.write() as s:
            s.add(
                ApiKey(
                    id=key_id,
                    account_id=account_id,
                    key_hash=hash_key(plain),
                    prefix=plain[:8],
                    name=name,
                    is_admin=is_admin,
                    created_at=self.clock(),
                )
            )
        return key_id, plain

    async def lookup_key(self, key_hash: str) -> KeyInfo | None:
        async with self.db.read() as s:
            row = (
                await s.execute(
                    select(ApiKey.id, ApiKey.account_id, Account.name, ApiKey.is_admin)
                    .join(Account, Account.id == ApiKey.account_id)
                    .where(
                        ApiKey.key_hash == key_hash,
                        ApiKey.revoked_at.is_(None),
                        Account.disabled.is_(False),
                    )
                )
            ).first()
        if row is None:
            return None
        return KeyInfo(key_id=row[0], account_id=row[1], account_name=row[2], is_admin=row[3])

    async def has_key_hash(self, key_hash: str) -> bool:
        async with self.db.read() as s:
            return (
                await s.scalar(select(ApiKey.id).where(ApiKey.key_hash == key_hash))
            ) is not None

    async def has_admin_key(self) -> bool:
        async with self.db.read() as s:
            found = await s.scalar(
                select(ApiKey.id).where(ApiKey.is_admin.is_(True), ApiKey.revoked_at.is_(None))
            )
            return found is not None

    async def list_keys(self) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            rows = await s.execute(
                select(ApiKey, Account.name)
                .join(Account, Account.id == ApiKey.account_id)
                .order_by(ApiKey.created_at)
            )
            return [
                {
                    "id": k.id,
                    "account": name,
                    "prefix": k.prefix,
                    "admin": k.is_admin,
                    "created_at": k.created_at,
                    "revoked_at": k.revoked_at,
                }
                for k, name in rows
            ]

    async def revoke_key(self, key_id: str) -> str:
        """Revoke a key; returns its hash so caches can drop it."""
        async with self.db.write() as s:
            row = await s.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"key {key_id!r} not found")
            row.revoked_at = row.revoked_at or self.clock()
            return row.key_hash

    # Admission --------------------------------------------------------------

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
    ) -> AdmitResult:
        """Create the generation, its first event and its debit in one transaction.

        Returns the existing generation when ``idempotency_key`` was used before
        with the same request; raises ``Conflict`` if it was used with another one.
        """
        if idempotency_key:
            existing = await self._by_idempotency(account_id, idempotency_key)
            if existing is not None:
                return self._replay(existing, request_hash)
        now = self.clock()
        gen_id = new_id("gen")
        quota_after: QuotaState | None = None
        try:
            async with self.db.write() as s:
                await lock_account(s, account_id)
                if quota is not None:
                    quota_after = await check_quota(s, account_id, quota, now)
                await check_budget(s, account_id, estimated_usd, now)
                remaining = await self._debit(s, account_id, gen_id, credits, now)
                s.add(
                    Generation(
                        id=gen_id,
                        account_id=account_id,
                        project=project,
                        source=source,
                        status=Status.PENDING.value,
                        progress=0,
                        prompt=prompt,
                        request=request,
                        request_hash=request_hash,
                        idempotency_key=idempotency_key,
                        request_id=request_id,
                        route=[],
                        credits=credits,
                        estimated_usd=estimated_usd,
                        run_after=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
                await s.flush()
                s.add(Event(generation_id=gen_id, type="queued", data={}, created_at=now))
                if remaining is not None:
                    # the ledger row references the generation: insert it after the row
                    s.add(
                        LedgerEntry(
                            account_id=account_id,
                            generation_id=gen_id,
                            kind="debit",
                            credits=-credits,
                            reason="generation",
                            actor="system",
                            created_at=now,
                        )
                    )
        except IntegrityError:
            if idempotency_key:
                existing = await self._by_idempotency(account_id, idempotency_key)
                if existing is not None:
                    return self._replay(existing, request_hash)
            raise
        view = await self.get_generation(gen_id)
        return AdmitResult(
            generation=view, created=True, credits_remaining=remaining, quota=quota_after
        )

    def _replay(self, existing: tuple[GenerationView, str], request_hash: str) -> AdmitResult:
        view, stored_hash = existing
        if stored_hash != request_hash:
            raise Conflict(
                "Idempotency-Key was already used with a different request",
                code="idempotency_key_reused",
            )
        return AdmitResult(generation=view, created=False, credits_remaining=None)

    async def _by_idempotency(
        self, account_id: str, key: str
    ) -> tuple[GenerationView, str] | None:
        async with self.db.read() as s:
            row = (
                await s.execute(
                    select(Generation.id, Generation.request_hash).where(
                        Generation.account_id == account_id, Generation.idempotency_key == key
                    )
                )
            ).first()
        if row is None:
            return None
        return await self.get_generation(row[0]), row[1]

    async def _debit(
        self, s: AsyncSession, account_id: str, gen_id: str, credits: int, now: datetime
    ) -> int | None:
        """Take ``credits`` from a metered account; ``None`` for an unmetered one."""
        balance = await s.scalar(select(Account.credits).where(Account.id == account_id))
        if balance is None:
            return None
        result = await s.execute(
            update(Account)
            .where(Account.id == account_id, Account.credits >= credits)
            .values(credits=Account.credits - credits)
            .returning(Account.credits)
        )
        remaining = result.scalar()
        if remaining is None:
            raise InsufficientCredits(
                f"this generation costs {credits} credits; the balance is {balance}",
                balance=balance,
                price=credits,
            )
        return int(remaining)

    async def _refund(self, s: AsyncSession, gen_id: str, reason: str, now: datetime) -> int:
        """Refund a generation's debit at most once (the unique (generation, kind) holds it)."""
        debit = await s.scalar(
            select(LedgerEntry).where(
                LedgerEntry.generation_id == gen_id, LedgerEntry.kind == "debit"
            )
        )
        if debit is None:
            return 0
        already = await s.scalar(
            select(LedgerEntry.id).where(
                LedgerEntry.generation_id == gen_id, LedgerEntry.kind == "refund"
            )
        )
        if already is not None:
            return 0
        policy = await s.scalar(select(Account.credit_policy).where(Account.id == debit.account_id))
        if policy == "keep":
            return 0
        amount = -debit.credits
        s.add(
            LedgerEntry(
                account_id=debit.account_id,
                generation_id=gen_id,
                kind="refund",
                credits=amount,
                reason=reason,
                actor="system",
                created_at=now,
            )
        )
        await s.execute(
            update(Account)
            .where(Account.id == debit.account_id)
            .values(credits=Account.credits + amount)
        )
        return amount

    # Reading ----------------------------------------------------------------

    async def get_generation(self, gen_id: str, *, account_id: str | None = None) -> GenerationView:
        """The generation with its images; ``NotFound`` for another account's."""
        async with self.db.read() as s:
            row = (
                await s.execute(
                    select(Generation, Account.name)
                    .join(Account, Account.id == Generation.account_id)
                    .where(Generation.id == gen_id)
                )
            ).first()
            if row is None or (account_id is not None and row[0].account_id != account_id):
                raise NotFound(f"generation {gen_id!r} not found")
            images = list(
                await s.scalars(
                    select(Image).where(Image.generation_id == gen_id).order_by(Image.index)
                )
            )
            view = self._view(row[0], row[1], images)
            if view.status == Status.PENDING:
                view.queue_position = await s.scalar(
                    select(func.count())
                    .select_from(Generation)
                    .where(
                        Generation.status == Status.PENDING.value,
                        Generation.created_at < row[0].created_at,
                    )
                )
            return view

    async def list_generations(
        self,
        *,
        account_id: str | None,
        status: Status | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> list[GenerationView]:
        """Newest first; ``cursor`` is the last id of the previous page (ids sort by time)."""
        query = select(Generation, Account.name).join(Account, Account.id == Generation.account_id)
        if account_id is not None:
            query = query.where(Generation.account_id == account_id)
        if status is not None:
            query = query.where(Generation.status == status.value)
        if cursor:
            query = query.where(Generation.id < cursor)
        query = query.order_by(Generation.id.desc()).limit(limit)
        async with self.db.read() as s:
            rows = (await s.execute(query)).all()
            ids = [r[0].id for r in rows]
            images: dict[str, list[Image]] = {i: [] for i in ids}
            if ids:
                for img in await s.scalars(
                    select(Image).where(Image.generation_id.in_(ids)).order_by(Image.index)
                ):
                    images[img.generation_id].append(img)
        return [self._view(r[0], r[1], images[r[0].id]) for r in rows]

    async def status_of(self, gen_id: str) -> tuple[str, bool] | None:
        async with self.db.read() as s:
            row = (
                await s.execute(
                    select(Generation.status, Generation.cancel_requested).where(
                        Generation.id == gen_id
                    )
                )
            ).first()
            return (row[0], row[1]) if row else None

    async def events_after(self, gen_id: str, after_id: int = 0) -> list[EventView]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Event)
                .where(Event.generation_id == gen_id, Event.id > after_id)
                .order_by(Event.id)
            )
            return [
                EventView(
                    id=e.id,
                    generation_id=e.generation_id,
                    type=e.type,
                    data=e.data,
                    created_at=e.created_at,
                )
                for e in rows
            ]

    def _view(self, g: Generation, account_name: str, images: Sequence[Image]) -> GenerationView:
        return GenerationView(
            id=g.id,
            account_id=g.account_id,
            account_name=account_name,
            project=g.project,
            status=Status(g.status),
            progress=g.progress,
            prompt=g.prompt,
            request=dict(g.request),
            source=g.source,
            provider=g.provider,
            model=g.model,
            retry_count=g.retry_count,
            last_retry_at=g.last_retry_at,
            error_code=g.error_code,
            error_message=g.error_message,
            credits=g.credits,
            cost_usd=g.cost_usd,
            estimated_usd=g.estimated_usd,
            created_at=g.created_at,
            updated_at=g.updated_at,
            started_at=g.started_at,
            completed_at=g.completed_at,
            provider_ms=g.provider_ms,
            request_id=g.request_id,
            cancel_requested=g.cancel_requested,
            route=list(g.route or []),
            fallback_image=g.fallback_image,
            images=[
                ImageView(
                    id=i.id,
                    index=i.index,
                    key=i.key,
                    url=self.url_for(i.key),
                    width=i.width,
                    height=i.height,
                    format=i.format,
                    content_type=i.content_type,
                    bytes=i.bytes,
                    sha256=i.sha256,
                    attribution=i.attribution,
                )
                for i in images
            ],
        )

    # The queue --------------------------------------------------------------

    async def claim(self, owner: str, lease_s: float, limit: int) -> list[ClaimedJob]:
        """Claim up to ``limit`` runnable PENDING jobs: ``PENDING → PROCESSING`` by CAS."""
        now = self.clock()
        expires = now + timedelta(seconds=lease_s)
        claimed: list[ClaimedJob] = []
        async with self.db.write() as s:
            query = (
                select(Generation.id)
                .where(Generation.status == Status.PENDING.value, Generation.run_after <= now)
                .order_by(Generation.run_after, Generation.id)
                .limit(limit)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(await s.scalars(query))
            for gen_id in ids:
                result = await s.execute(
                    update(Generation)
                    .where(
                        Generation.id == gen_id,
                        Generation.status.in_(sources_of(Status.PROCESSING)),
                    )
                    .values(
                        status=Status.PROCESSING.value,
                        lease_owner=owner,
                        lease_expires_at=expires,
                        deliveries=Generation.deliveries + 1,
                        started_at=func.coalesce(Generation.started_at, now),
                        updated_at=now,
                    )
                    .returning(
                        Generation.id,
                        Generation.account_id,
                        Generation.project,
                        Generation.request,
                        Generation.created_at,
                        Generation.provider_job_id,
                        Generation.provider_job_provider,
                        Generation.deliveries,
                    )
                )
                row = result.first()
                if row is None:
                    continue
                name = await s.scalar(select(Account.name).where(Account.id == row[1]))
                s.add(
                    Event(
                        generation_id=gen_id,
                        type="started",
                        data={"delivery": row[7]},
                        created_at=now,
                    )
                )
                created_at = row[4]
                if created_at.tzinfo is None:
                    created_at = created_at.replace(tzinfo=UTC)
                claimed.append(
                    ClaimedJob(
                        id=row[0],
                        account_id=row[1],
                        account_name=name or row[1],
                        project=row[2],
                        request=row[3],
                        created_at=created_at,
                        provider_job_id=row[5],
                        provider_job_provider=row[6],
                        deliveries=row[7],
                    )
                )
        return claimed

    async def renew(self, gen_id: str, owner: str, lease_s: float) -> tuple[bool, bool]:
        """Extend a lease; returns ``(still_owned, cancel_requested)``."""
        now = self.clock()
        async with self.db.write() as s:
            result = await s.execute(
                update(Generation)
                .where(
                    Generation.id == gen_id,
                    Generation.lease_owner == owner,
                    Generation.status == Status.PROCESSING.value,
                )
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
                .returning(Generation.cancel_requested)
            )
            row = result.first()
        return (row is not None, bool(row[0]) if row else False)

    async def renew_all(self, owner: str, lease_s: float) -> dict[str, bool]:
        """Extend every lease of ``owner`` in one statement; ``{id: cancel_requested}``."""
        now = self.clock()
        async with self.db.write() as s:
            result = await s.execute(
                update(Generation)
                .where(
                    Generation.lease_owner == owner,
                    Generation.status == Status.PROCESSING.value,
                )
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
                .returning(Generation.id, Generation.cancel_requested)
            )
            return {row[0]: bool(row[1]) for row in result}

    async def release(self, gen_id: str, owner: str) -> bool:
        """Give a job back to the queue (shutdown): ``PROCESSING → PENDING``."""
        now = self.clock()
        async with self.db.write() as s:
            result = await s.execute(
                update(Generation)
                .where(
                    Generation.id == gen_id,
                    Generation.lease_owner == owner,
                    Generation.status.in_(sources_of(Status.PENDING)),
                )
                .values(
                    status=Status.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    run_after=now,
                    updated_at=now,
                )
                .returning(Generation.id)
            )
            released = result.first() is not None
            if released:
                s.add(Event(generation_id=gen_id, type="released", data={}, created_at=now))
        return released

    async def reap(self, *, dead_owners: Sequence[str] = ()) -> list[str]:
        """Return jobs whose lease expired (or whose owner is known dead) to PENDING."""
        now = self.clock()
        cond = and_(Generation.lease_expires_at.is_not(None), Generation.lease_expires_at < now)
        if dead_owners:
            cond = or_(cond, Generation.lease_owner.in_(list(dead_owners)))
        async with self.db.write() as s:
            result = await s.execute(
                update(Generation)
                .where(Generation.status == Status.PROCESSING.value, cond)
                .values(
                    status=Status.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    run_after=now,
                    updated_at=now,
                )
                .returning(Generation.id)
            )
            ids = [r[0] for r in result]
            for gen_id in ids:
                s.add(Event(generation_id=gen_id, type="requeued", data={}, created_at=now))
        return ids

    async def lease_owners(self) -> list[str]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Generation.lease_owner)
                .where(Generation.status == Status.PROCESSING.value)
                .distinct()
            )
            return [r for r in rows if r]

    async def pending_ids(self, limit: int = 1000) -> list[str]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Generation.id)
                .where(Generation.status == Status.PENDING.value)
                .order_by(Generation.id)
                .limit(limit)
            )
            return list(rows)

    # Progress while running ---------------------------------------------------

    async def add_event(
        self, gen_id: str, type_: str, data: dict[str, Any] | None = None, **values: Any
    ) -> int:
        """Append an event, optionally updating columns of the generation in the same txn."""
        now = self.clock()
        async with self.db.write() as s:
            if values:
                await s.execute(
                    update(Generation)
                    .where(Generation.id == gen_id)
                    .values(updated_at=now, **values)
                )
            event = Event(generation_id=gen_id, type=type_, data=data or {}, created_at=now)
            s.add(event)
            await s.flush()
            return int(event.id)

    async def save_provider_job(self, gen_id: str, provider: str, job_id: str) -> None:
        async with self.db.write() as s:
            await s.execute(
                update(Generation)
                .where(Generation.id == gen_id)
                .values(provider_job_id=job_id, provider_job_provider=provider)
            )

    async def clear_provider_job(self, gen_id: str) -> None:
        async with self.db.write() as s:
            await s.execute(
                update(Generation)
                .where(Generation.id == gen_id)
                .values(provider_job_id=None, provider_job_provider=None)
            )

    # Finishing ----------------------------------------------------------------

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
    ) -> int | None:
        """``PROCESSING → SUCCEEDED`` with images and usage, in one transaction.

        Returns the event id, or ``None`` when this worker no longer owns the job.
        """
        now = self.clock()
        async with self.db.write() as s:
            result = await s.execute(
                update(Generation)
                .where(
                    Generation.id == gen_id,
                    Generation.lease_owner == owner,
                    Generation.status.in_(sources_of(Status.SUCCEEDED)),
                )
                .values(
                    status=Status.SUCCEEDED.value,
                    progress=100,
                    provider=provider,
                    model=model,
                    cost_usd=cost_usd,
                    provider_ms=provider_ms,
                    route=route,
                    fallback_image=fallback_image,
                    lease_owner=None,
                    lease_expires_at=None,
                    completed_at=now,
                    updated_at=now,
                )
                .returning(Generation.id, Generation.credits)
            )
            row = result.first()
            if row is None:
                return None
            credits = int(row[1])
            await s.execute(delete(Image).where(Image.generation_id == gen_id))
            for img in images:
                s.add(
                    Image(
                        id=new_id("img"),
                        generation_id=gen_id,
                        account_id=account_id,
                        index=img.index,
                        key=img.key,
                        width=img.width,
                        height=img.height,
                        format=img.format,
                        content_type=img.content_type,
                        bytes=img.bytes,
                        sha256=img.sha256,
                        attribution=img.attribution,
                        created_at=now,
                    )
                )
            await self._add_usage(
                s,
                account_id,
                provider,
                model,
                now,
                ok=True,
                images=len(images),
                credits=credits,
                usd=cost_usd,
                provider_ms=provider_ms,
            )
            event = Event(
                generation_id=gen_id,
                type="succeeded",
                data={"provider": provider, "model": model, "images": len(images)},
                created_at=now,
            )
            s.add(event)
            await s.flush()
            return int(event.id)

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
    ) -> int | None:
        """``PROCESSING → FAILED`` with the refund (at most once), in one transaction."""
        now = self.clock()
        async with self.db.write() as s:
            cond = [
                Generation.id == gen_id,
                Generation.status.in_(sources_of(Status.FAILED)),
            ]
            if owner is not None:
                cond.append(Generation.lease_owner == owner)
            result = await s.execute(
                update(Generation)
                .where(*cond)
                .values(
                    status=Status.FAILED.value,
                    error_code=code,
                    error_message=message,
                    route=route,
                    provider=provider,
                    model=model,
                    lease_owner=None,
                    lease_expires_at=None,
                    completed_at=now,
                    updated_at=now,
                )
                .returning(Generation.id)
            )
            if result.first() is None:
                return None
            refunded = await self._refund(s, gen_id, f"generation failed: {code}", now)
            if provider:
                await self._add_usage(
                    s,
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
            event = Event(
                generation_id=gen_id,
                type="failed",
                data={"code": code, "message": message, "refunded_credits": refunded},
                created_at=now,
            )
            s.add(event)
            await s.flush()
            return int(event.id)

    async def cancel(self, gen_id: str, *, account_id: str | None) -> tuple[GenerationView, int]:
        """Cancel: a PENDING job ends now (refunded); a PROCESSING one is flagged for its worker.

        Returns the generation and the event id written (0 when only flagged).
        """
        now = self.clock()
        await self.get_generation(gen_id, account_id=account_id)  # ownership → NotFound
        event_id = 0
        async with self.db.write() as s:
            row = await s.get(Generation, gen_id)
            assert row is not None
            if row.status == Status.PENDING.value:
                row.status = Status.CANCELED.value
                row.completed_at = now
                row.updated_at = now
                row.error_code = "canceled"
                row.error_message = "canceled before it started"
                refunded = await self._refund(s, gen_id, "canceled before start", now)
                event = Event(
                    generation_id=gen_id,
                    type="canceled",
                    data={"refunded_credits": refunded},
                    created_at=now,
                )
                s.add(event)
                await s.flush()
                event_id = int(event.id)
            elif row.status == Status.PROCESSING.value:
                row.cancel_requested = True
                row.updated_at = now
            else:
                raise Conflict(f"generation is already {row.status}", code="already_finished")
        return await self.get_generation(gen_id), event_id

    async def finish_canceled(
        self, gen_id: str, owner: str, *, route: list[dict[str, Any]]
    ) -> int | None:
        """``PROCESSING → CANCELED`` by the worker that saw the cancel request."""
        now = self.clock()
        async with self.db.write() as s:
            result = await s.execute(
                update(Generation)
                .where(
                    Generation.id == gen_id,
                    Generation.lease_owner == owner,
                    Generation.status.in_(sources_of(Status.CANCELED)),
                )
                .values(
                    status=Status.CANCELED.value,
                    error_code="canceled",
                    error_message="canceled while running",
                    route=route,
                    lease_owner=None,
                    lease_expires_at=None,
                    completed_at=now,
                    updated_at=now,
                )
                .returning(Generation.id)
            )
            if result.first() is None:
                return None
            refunded = await self._refund(s, gen_id, "canceled while running", now)
            event = Event(
                generation_id=gen_id,
                type="canceled",
                data={"refunded_credits": refunded},
                created_at=now,
            )
            s.add(event)
            await s.flush()
            return int(event.id)

    async def _add_usage(
        self,
        s: AsyncSession,
        account_id: str,
        provider: str,
        model: str,
        now: datetime,
        *,
        ok: bool,
        images: int,
        credits: int,
        usd: Decimal | None,
        provider_ms: int | None,
    ) -> None:
        day = now.strftime("%Y-%m-%d")
        key = {"account_id": account_id, "day": day, "provider": provider, "model": model}
        values = {
            "succeeded": UsageDaily.succeeded + (1 if ok else 0),
            "failed": UsageDaily.failed + (0 if ok else 1),
            "images": UsageDaily.images + images,
            "credits": UsageDaily.credits + credits,
            "usd": UsageDaily.usd + (usd or Decimal("0")),
            "latency_ms_total": UsageDaily.latency_ms_total + (provider_ms or 0),
        }
        result = await s.execute(
            update(UsageDaily)
            .where(*(getattr(UsageDaily, k) == v for k, v in key.items()))
            .values(**values)
            .returning(UsageDaily.day)
        )
        if result.first() is None:
            s.add(
                UsageDaily(
                    **key,
                    succeeded=1 if ok else 0,
                    failed=0 if ok else 1,
                    images=images,
                    credits=credits,
                    usd=usd or Decimal("0"),
                    latency_ms_total=provider_ms or 0,
                )
            )

    # Ledger -------------------------------------------------------------------

    async def ledger_sum(self, account_id: str) -> int:
        async with self.db.read() as s:
            total = await s.scalar(
                select(func.coalesce(func.sum(LedgerEntry.credits), 0)).where(
                    LedgerEntry.account_id == account_id
                )
            )
            return int(total or 0)

    async def grant_credits(self, account_id: str, credits: int, *, reason: str, actor: str) -> int:
        """Grant (positive) or revoke (negative) credits; returns the new balance."""
        if credits == 0:
            raise ValidationFailed("credits", "must not be zero")
        now = self.clock()
        async with self.db.write() as s:
            row = await s.get(Account, account_id)
            if row is None:
                raise NotFound("account not found")
            balance = (row.credits or 0) + credits
            if balance < 0:
                raise Conflict("the balance cannot become negative", code="negative_balance")
            row.credits = balance
            s.add(
                LedgerEntry(
                    account_id=account_id,
                    kind="grant" if credits > 0 else "revoke",
                    credits=credits,
                    reason=reason,
                    actor=actor,
                    created_at=now,
                )
            )
            return balance
