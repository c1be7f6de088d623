"""All SQL of pixelgate: accounts, keys, generations (and their queue columns), events, ledger.

Every state change of a generation is a compare-and-set guarded by
:mod:`pixelgate.core.states`, so a duplicate delivery or a late worker is a no-op.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pixelgate.core.ids import new_id
from pixelgate.core.models import AccountView, EventView, GenerationView, ImageView, Status
from pixelgate.core.states import sources_of
from pixelgate.db.billing import (
    LockedAccount,
    Quota,
    QuotaState,
    check_budget,
    check_quota,
    lock_account,
    quota_state,
)
from pixelgate.db.engine import Database
from pixelgate.db.tables import (
    Account,
    ApiKey,
    Batch,
    ConfigVersion,
    EntityLink,
    Event,
    Generation,
    Image,
    LedgerEntry,
    PromptTemplate,
    UsageDaily,
)
from pixelgate.errors import (
    Conflict,
    InsufficientCredits,
    NotFound,
    RateLimited,
    ValidationFailed,
)

__all__ = [
    "AdmitResult",
    "BatchView",
    "CacheLookup",
    "ClaimedJob",
    "KeyInfo",
    "LinkView",
    "NewGeneration",
    "NewImage",
    "RunningEvent",
    "Store",
    "TemplateView",
    "hash_key",
]

KEY_PREFIX = "pg_"
ACCOUNT_CACHE_TTL_S = 2.0
_CLAIMABLE: list[Any] = []
ACCOUNT_CACHE_MAX = 10_000

# The tables themselves, for the statements every job runs: Core statements skip the
# ORM's per-statement work (entity compilation, bulk-update synchronisation), which was
# the largest share of a worker's CPU per job (docs/benchmarks.md).
GEN = cast(Table, Generation.__table__)
EVT = cast(Table, Event.__table__)
IMG = cast(Table, Image.__table__)
BATCH = cast(Table, Batch.__table__)
#: what a claim returns of the claimed row (see ``Store._claimed``)
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


@dataclass(frozen=True)
class RunningEvent:
    """An event of a running generation (progress, a partial image) and the generation
    columns it sets (``progress``)."""

    generation_id: str
    type: str
    data: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)


def _pending_values(pending: Sequence[RunningEvent]) -> dict[str, Any]:
    """The generation columns a finishing job's waiting events set, later ones winning
    (the finishing update's own columns win over all of them)."""
    values: dict[str, Any] = {}
    for event in pending:
        values.update(event.values)
    return values


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
        self._account_cache: dict[str, tuple[float, AccountView]] = {}
        # Statements that lock many generation rows at once (event flushes, lease renewal,
        # the reaper) take turns in this process: two of them locking rows in different
        # orders could deadlock on PostgreSQL.
        self._many_rows = asyncio.Lock()
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
        allowed = {
            "tier",
            "daily_budget_usd",
            "preferred_providers",
            "credit_policy",
            "email",
            "webhook_url",
            "disabled",
            "settings",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValidationFailed(sorted(unknown)[0], "cannot be changed")
        self._account_cache.pop(account_id, None)
        async with self.db.write() as s:
            row = await s.get(Account, account_id)
            if row is None:
                raise NotFound("account not found")
            for name, value in fields.items():
                setattr(row, name, value.upper() if name == "tier" else value)
            await s.flush()
            return _account_view(row)

    async def get_account_cached(self, account_id: str) -> AccountView:
        """``get_account`` with a short-lived cache, for admission's tier and preferences.

        Money never depends on it: balances and budgets are read inside the admission
        transaction. A change made through this process drops the entry at once.
        """
        now = time.monotonic()
        hit = self._account_cache.get(account_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        account = await self.get_account(account_id)
        if len(self._account_cache) > ACCOUNT_CACHE_MAX:
            self._account_cache.clear()
        self._account_cache[account_id] = (now + ACCOUNT_CACHE_TTL_S, account)
        return account

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
        cache: CacheLookup | None = None,
        entities: Sequence[tuple[str, str]] = (),
        account_name: str | None = None,
    ) -> AdmitResult:
        """Create the generation, its first event and its debit in one transaction.

        Returns the existing generation when ``idempotency_key`` was used before
        with the same request; raises ``Conflict`` if it was used with another one.
        With ``cache``, an identical earlier result is copied (the generation is
        SUCCEEDED at once) or a running identical one is followed, for ``cache.credits``.
        """
        if idempotency_key:
            existing = await self._by_idempotency(account_id, idempotency_key)
            if existing is not None:
                return self._replay(existing, request_hash)
        now = self.clock()
        gen_id = new_id("gen")
        quota_after: QuotaState | None = None
        fresh: GenerationView | None = None
        try:
            async with self.db.write() as s:
                # other admissions of the account matter only with a quota, a balance, a
                # budget or the cache; an unmetered account's admissions run in parallel
                locked = await lock_account(
                    s, account_id, always=quota is not None or (cache is not None and cache.use)
                )
                match = await self._cache_match(s, account_id, cache) if cache else None
                if match is not None and cache is not None:
                    credits, estimated_usd = cache.credits, Decimal("0")
                if quota is not None:
                    quota_after = await check_quota(s, account_id, quota, now)
                await check_budget(s, locked, account_id, estimated_usd, now)
                remaining = await self._debit(s, locked, account_id, credits)
                row = Generation(
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
                    cache_key=cache.key if cache else None,
                )
                s.add(row)
                await s.flush()
                s.add(Event(generation_id=gen_id, type="queued", data={}, created_at=now))
                # a free cache hit is no debit at all
                if remaining is not None and (credits > 0 or match is None):
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
                if match is not None or entities:
                    await self._after_admit(
                        s,
                        gen_id,
                        account_id,
                        cache=cache,
                        match=match,
                        entities=entities,
                        credits=credits,
                        now=now,
                    )
                elif account_name is not None:
                    # the answer is built from what was inserted: no read-back
                    fresh = self._view(row, account_name, [])
        except IntegrityError:
            if idempotency_key:
                existing = await self._by_idempotency(account_id, idempotency_key)
                if existing is not None:
                    return self._replay(existing, request_hash)
            raise
        if fresh is not None:
            # counted after the commit: not while holding the account's lock
            fresh.queue_position = await self._queue_position(now)
        view = fresh if fresh is not None else await self.get_generation(gen_id)
        return AdmitResult(
            generation=view, created=True, credits_remaining=remaining, quota=quota_after
        )

    async def _queue_position(self, created_at: datetime) -> int:
        """How many pending generations were created before ``created_at``."""
        async with self.db.read() as s:
            ahead = await s.scalar(
                select(func.count())
                .select_from(GEN)
                .where(GEN.c.status == Status.PENDING.value, GEN.c.created_at < created_at)
            )
        return int(ahead or 0)

    def _replay(self, existing: tuple[GenerationView, str], request_hash: str) -> AdmitResult:
        view, stored_hash = existing
        if stored_hash != request_hash:
            raise Conflict(
                "Idempotency-Key was already used with a different request",
                code="idempotency_key_reused",
            )
        return AdmitResult(generation=view, created=False, credits_remaining=None)

    async def _by_idempotency(self, account_id: str, key: str) -> tuple[GenerationView, str] | None:
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
        self, s: AsyncSession, account: LockedAccount, account_id: str, credits: int
    ) -> int | None:
        """Take ``credits`` from a metered account; ``None`` for an unmetered one."""
        balance = account.credits
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
        batch_id: str | None = None,
        entity: tuple[str, str | None] | None = None,
    ) -> list[GenerationView]:
        """Newest first; ``cursor`` is the last id of the previous page (ids sort by time).

        ``entity`` is ``(type, id)`` (``id`` None: any entity of the type) of a link.
        """
        query = select(Generation, Account.name).join(Account, Account.id == Generation.account_id)
        if account_id is not None:
            query = query.where(Generation.account_id == account_id)
        if status is not None:
            query = query.where(Generation.status == status.value)
        if batch_id is not None:
            query = query.where(Generation.batch_id == batch_id)
        if entity is not None:
            linked = select(EntityLink.id).where(
                EntityLink.generation_id == Generation.id, EntityLink.entity_type == entity[0]
            )
            if entity[1] is not None:
                linked = linked.where(EntityLink.entity_id == entity[1])
            query = query.where(linked.exists())
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
                    select(GEN.c.status, GEN.c.cancel_requested).where(GEN.c.id == gen_id)
                )
            ).first()
            return (row[0], row[1]) if row else None

    async def events_after(self, gen_id: str, after_id: int = 0) -> list[EventView]:
        """Events after ``after_id``; one that names a stored object (``key``: a partial
        image) gets its ``url`` now, as images do, so a presigned URL is always fresh."""
        async with self.db.read() as s:
            rows = await s.execute(
                select(EVT.c.id, EVT.c.generation_id, EVT.c.type, EVT.c.data, EVT.c.created_at)
                .where(EVT.c.generation_id == gen_id, EVT.c.id > after_id)
                .order_by(EVT.c.id)
            )
            return [
                EventView(
                    id=r[0],
                    generation_id=r[1],
                    type=r[2],
                    data=self._event_data(r[3]),
                    created_at=r[4],
                )
                for r in rows
            ]

    def _event_data(self, data: dict[str, Any]) -> dict[str, Any]:
        key = data.get("key")
        return {**data, "url": self.url_for(key)} if isinstance(key, str) else data

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
            cached_from=g.cached_from,
            batch_id=g.batch_id,
            images=[self._image_view(i) for i in images],
        )

    # The queue --------------------------------------------------------------

    async def claim(self, owner: str, lease_s: float, limit: int) -> list[ClaimedJob]:
        """Claim up to ``limit`` runnable PENDING jobs: ``PENDING → PROCESSING`` by CAS."""
        now = self.clock()
        expires = now + timedelta(seconds=lease_s)
        rows: list[Any] = []
        async with self.db.write() as s:
            query = (
                select(GEN.c.id, GEN.c.batch_id)
                .where(
                    GEN.c.status == Status.PENDING.value,
                    GEN.c.run_after <= now,
                    *self._claimable(),
                )
                .order_by(GEN.c.run_after, GEN.c.id)
                .limit(limit)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=GEN)
            candidates = [(r[0], r[1]) for r in await s.execute(query)]
            for gen_id in await self._within_batch_limits(s, candidates):
                result = await s.execute(
                    update(GEN)
                    .where(GEN.c.id == gen_id, GEN.c.status.in_(sources_of(Status.PROCESSING)))
                    .values(
                        status=Status.PROCESSING.value,
                        lease_owner=owner,
                        lease_expires_at=expires,
                        deliveries=GEN.c.deliveries + 1,
                        started_at=func.coalesce(GEN.c.started_at, now),
                        updated_at=now,
                    )
                    .returning(*_CLAIM_COLUMNS)
                )
                row = result.first()
                if row is None:
                    continue
                await self._insert_event(s, gen_id, "started", {"delivery": row[7]}, now)
                rows.append(row)
        return [await self._claimed(row) for row in rows]

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

    async def renew(self, gen_id: str, owner: str, lease_s: float) -> tuple[bool, bool]:
        """Extend a lease; returns ``(still_owned, cancel_requested)``."""
        now = self.clock()
        async with self.db.write() as s:
            result = await s.execute(
                update(GEN)
                .where(
                    GEN.c.id == gen_id,
                    GEN.c.lease_owner == owner,
                    GEN.c.status == Status.PROCESSING.value,
                )
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
                .returning(GEN.c.cancel_requested)
            )
            row = result.first()
        return (row is not None, bool(row[0]) if row else False)

    async def renew_all(self, owner: str, lease_s: float) -> dict[str, bool]:
        """Extend every lease of ``owner`` in one statement; ``{id: cancel_requested}``."""
        now = self.clock()
        async with self._many_rows, self.db.write() as s:
            result = await s.execute(
                update(GEN)
                .where(GEN.c.lease_owner == owner, GEN.c.status == Status.PROCESSING.value)
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
                .returning(GEN.c.id, GEN.c.cancel_requested)
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
        async with self._many_rows, self.db.write() as s:
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

    async def _insert_pending(
        self, s: AsyncSession, pending: Sequence[RunningEvent], now: datetime
    ) -> None:
        """A finishing job's group-committed events, in one statement."""
        if pending:
            rows = [
                {
                    "generation_id": e.generation_id,
                    "type": e.type,
                    "data": e.data,
                    "created_at": now,
                }
                for e in pending
            ]
            await s.execute(insert(EVT).values(rows))

    async def _insert_event(
        self, s: AsyncSession, gen_id: str, type_: str, data: dict[str, Any] | None, now: datetime
    ) -> int:
        """One event row in ``s``'s transaction; its id."""
        event_id = await s.scalar(
            insert(EVT)
            .values(generation_id=gen_id, type=type_, data=data or {}, created_at=now)
            .returning(EVT.c.id)
        )
        return int(event_id)

    async def add_running_events(self, events: Sequence[RunningEvent]) -> list[str]:
        """Append events of running generations in one transaction of three statements,
        whatever their number; returns the generation ids that got one, in order.

        An event whose generation is no longer ``PROCESSING`` is dropped. The rows are
        locked first, in id order, so no event can land after a finishing transaction's
        final event and two such writers cannot deadlock.
        """
        if not events:
            return []
        now = self.clock()
        ids = sorted({e.generation_id for e in events})
        async with self._many_rows, self.db.write() as s:
            query = (
                select(GEN.c.id)
                .where(GEN.c.id.in_(ids), GEN.c.status == Status.PROCESSING.value)
                .order_by(GEN.c.id)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(key_share=True)  # FOR NO KEY UPDATE
            running = set(await s.scalars(query))
            kept = [e for e in events if e.generation_id in running]
            if not kept:
                return []
            await self._apply_event_values(s, kept, now)
            await self._insert_pending(s, kept, now)
        return [e.generation_id for e in kept]

    async def _apply_event_values(
        self, s: AsyncSession, events: Sequence[RunningEvent], now: datetime
    ) -> None:
        """The generation columns the events set (later ones winning): one executemany
        per set of columns (``progress``; ``provider, model, route``...)."""
        merged: dict[str, dict[str, Any]] = {}
        for event in events:
            merged.setdefault(event.generation_id, {}).update(event.values)
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for gen_id, values in merged.items():
            row = {"gen": gen_id, **{f"v_{k}": v for k, v in values.items()}}
            groups.setdefault(tuple(sorted(values)), []).append(row)
        for columns, rows in groups.items():
            stmt = (
                update(GEN)
                .where(GEN.c.id == bindparam("gen"))
                .values(updated_at=now, **{c: bindparam(f"v_{c}") for c in columns})
            )
            await s.execute(stmt, rows)

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
        pending: Sequence[RunningEvent] = (),
    ) -> int | None:
        """``PROCESSING → SUCCEEDED`` with images and usage, in one transaction; the job's
        ``pending`` events (group commit) are written before its final event.

        Returns the event id, or ``None`` when this worker no longer owns the job.
        """
        now = self.clock()
        async with self.db.write() as s:
            result = await s.execute(
                update(GEN)
                .where(
                    GEN.c.id == gen_id,
                    GEN.c.lease_owner == owner,
                    GEN.c.status.in_(sources_of(Status.SUCCEEDED)),
                )
                .values(
                    _pending_values(pending)
                    | {
                        "status": Status.SUCCEEDED.value,
                        "progress": 100,
                        "provider": provider,
                        "model": model,
                        "cost_usd": cost_usd,
                        "provider_ms": provider_ms,
                        "route": route,
                        "fallback_image": fallback_image,
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "completed_at": now,
                        "updated_at": now,
                    }
                )
                .returning(GEN.c.credits, GEN.c.batch_id, GEN.c.cache_key)
            )
            row = result.first()
            if row is None:
                return None
            credits, batch_id, cache_key = int(row[0]), row[1], row[2]
            await self._insert_pending(s, pending, now)
            await s.execute(delete(IMG).where(IMG.c.generation_id == gen_id))
            await self._add_images(s, gen_id, account_id, images, now)
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
            if cache_key is not None:
                await self._settle_followers(
                    s,
                    gen_id,
                    now,
                    images=None if fallback_image else images,
                    provider=provider,
                    model=model,
                    error="ended with the default image" if fallback_image else None,
                )
            await self._free_batch_slot(s, batch_id)
            data = {"provider": provider, "model": model, "images": len(images)}
            return await self._insert_event(s, gen_id, "succeeded", data, now)

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
    ) -> int | None:
        """``PROCESSING → FAILED`` with the refund (at most once), in one transaction (with
        the job's ``pending`` events before its final one)."""
        now = self.clock()
        async with self.db.write() as s:
            cond = [GEN.c.id == gen_id, GEN.c.status.in_(sources_of(Status.FAILED))]
            if owner is not None:
                cond.append(GEN.c.lease_owner == owner)
            result = await s.execute(
                update(GEN)
                .where(*cond)
                .values(
                    _pending_values(pending)
                    | {
                        "status": Status.FAILED.value,
                        "error_code": code,
                        "error_message": message,
                        "route": route,
                        "provider": provider,
                        "model": model,
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "completed_at": now,
                        "updated_at": now,
                    }
                )
                .returning(GEN.c.batch_id, GEN.c.cache_key)
            )
            row = result.first()
            if row is None:
                return None
            await self._insert_pending(s, pending, now)
            refunded = await self._refund(s, gen_id, f"generation failed: {code}", now)
            if row[1] is not None:
                await self._settle_followers(s, gen_id, now, error=f"failed ({code}: {message})")
            await self._free_batch_slot(s, row[0])
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
            data = {"code": code, "message": message, "refunded_credits": refunded}
            return await self._insert_event(s, gen_id, "failed", data, now)

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
                await self._settle_followers(s, gen_id, now, error="was canceled")
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
        self,
        gen_id: str,
        owner: str,
        *,
        route: list[dict[str, Any]],
        pending: Sequence[RunningEvent] = (),
    ) -> int | None:
        """``PROCESSING → CANCELED`` by the worker that saw the cancel request."""
        now = self.clock()
        async with self.db.write() as s:
            result = await s.execute(
                update(GEN)
                .where(
                    GEN.c.id == gen_id,
                    GEN.c.lease_owner == owner,
                    GEN.c.status.in_(sources_of(Status.CANCELED)),
                )
                .values(
                    _pending_values(pending)
                    | {
                        "status": Status.CANCELED.value,
                        "error_code": "canceled",
                        "error_message": "canceled while running",
                        "route": route,
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "completed_at": now,
                        "updated_at": now,
                    }
                )
                .returning(GEN.c.batch_id, GEN.c.cache_key)
            )
            row = result.first()
            if row is None:
                return None
            await self._insert_pending(s, pending, now)
            refunded = await self._refund(s, gen_id, "canceled while running", now)
            if row[1] is not None:
                await self._settle_followers(s, gen_id, now, error="was canceled")
            await self._free_batch_slot(s, row[0])
            data = {"refunded_credits": refunded}
            return await self._insert_event(s, gen_id, "canceled", data, now)

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
        counts = {
            "succeeded": 1 if ok else 0,
            "failed": 0 if ok else 1,
            "images": images,
            "credits": credits,
            "usd": usd or Decimal("0"),
            "latency_ms_total": provider_ms or 0,
        }
        # One atomic upsert: an UPDATE-then-INSERT races when two workers finish jobs of
        # the same account/day/model at once (a unique violation that failed the job).
        from sqlalchemy.dialects import postgresql, sqlite

        dialect: Any = postgresql if self.db.dialect == "postgresql" else sqlite
        table = cast(Table, UsageDaily.__table__)
        stmt = dialect.insert(table).values(**key, **counts)
        await s.execute(
            stmt.on_conflict_do_update(
                index_elements=list(key),
                set_={name: table.c[name] + stmt.excluded[name] for name in counts},
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

    # Webhooks -----------------------------------------------------------------

    async def create_webhook_delivery(
        self, *, generation_id: str, account_id: str, event: str, url: str, payload: str
    ) -> str | None:
        """Record a pending delivery; ``None`` when this event was already recorded."""
        from pixelgate.db.tables import WebhookDelivery

        now = self.clock()
        delivery_id = new_id("whd")
        try:
            async with self.db.write() as s:
                s.add(
                    WebhookDelivery(
                        id=delivery_id,
                        generation_id=generation_id,
                        account_id=account_id,
                        event=event,
                        url=url,
                        payload=payload,
                        status="pending",
                        attempts=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            return None
        return delivery_id

    async def record_webhook_attempt(
        self,
        delivery_id: str,
        *,
        status: str,
        attempts: int,
        response_status: int | None,
        error: str | None,
    ) -> None:
        """Update a delivery after an attempt: ``pending``, ``delivered`` or ``failed``."""
        from pixelgate.db.tables import WebhookDelivery

        now = self.clock()
        async with self.db.write() as s:
            await s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id)
                .values(
                    status=status,
                    attempts=attempts,
                    response_status=response_status,
                    error=error,
                    updated_at=now,
                    delivered_at=now if status == "delivered" else None,
                )
            )

    async def list_webhook_deliveries(
        self, *, account_id: str | None, generation_id: str | None = None, limit: int = 50
    ) -> list[WebhookDeliveryView]:
        """Newest first; ``account_id`` None lists every account's (admin)."""
        from pixelgate.db.tables import WebhookDelivery

        query = select(WebhookDelivery)
        if account_id is not None:
            query = query.where(WebhookDelivery.account_id == account_id)
        if generation_id is not None:
            query = query.where(WebhookDelivery.generation_id == generation_id)
        query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        async with self.db.read() as s:
            rows = await s.scalars(query.limit(limit))
            return [
                WebhookDeliveryView(
                    id=r.id,
                    generation_id=r.generation_id,
                    account_id=r.account_id,
                    event=r.event,
                    url=r.url,
                    status=r.status,
                    attempts=r.attempts,
                    response_status=r.response_status,
                    error=r.error,
                    created_at=r.created_at,
                    updated_at=r.updated_at,
                    delivered_at=r.delivered_at,
                )
                for r in rows
            ]

    # Hot configuration --------------------------------------------------------

    async def latest_config_version(self) -> int:
        """The newest hot-configuration version (0: none stored)."""
        async with self.db.read() as s:
            return int(await s.scalar(select(func.max(ConfigVersion.id))) or 0)

    async def latest_config(self) -> dict[str, Any] | None:
        async with self.db.read() as s:
            row = await s.scalar(select(ConfigVersion).order_by(ConfigVersion.id.desc()).limit(1))
            return _config_record(row) if row is not None else None

    async def save_config(
        self, data: dict[str, Any], *, actor: str | None, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Store a new hot-configuration version; ``Conflict`` if another was stored since
        ``expected_version``."""
        async with self.db.write() as s:
            if expected_version is not None:
                latest = int(await s.scalar(select(func.max(ConfigVersion.id))) or 0)
                if latest != expected_version:
                    raise Conflict(
                        f"the configuration is at version {latest}, not {expected_version}",
                        code="config_version_conflict",
                    )
            row = ConfigVersion(data=data, actor=actor, created_at=utcnow())
            s.add(row)
            await s.flush()
            return _config_record(row)

    async def config_versions(self, limit: int = 20) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(ConfigVersion).order_by(ConfigVersion.id.desc()).limit(limit)
            )
            return [_config_record(r) for r in rows]

    async def account_routing(self, account_id: str) -> tuple[list[str], dict[str, Any]]:
        """An account's preferred providers and the ``routing`` part of its settings."""
        account = await self.get_account_cached(account_id)
        routing = account.settings.get("routing")
        return list(account.preferred_providers), dict(routing) if isinstance(routing, dict) else {}

    async def set_account_routing(self, account_id: str, routing: dict[str, Any] | None) -> None:
        """Replace the ``routing`` part of an account's settings (None removes it)."""
        self._account_cache.pop(account_id, None)
        async with self.db.write() as s:
            row = await s.get(Account, account_id)
            if row is None:
                raise NotFound("account not found")
            settings = dict(row.settings or {})
            if routing is None:
                settings.pop("routing", None)
            else:
                settings["routing"] = routing
            row.settings = settings

    async def attach_fallback_image(
        self, gen_id: str, owner: str, image: NewImage, *, account_id: str
    ) -> bool:
        """Attach the default image to a running job about to fail (seed 001's fallback)."""
        now = utcnow()
        async with self.db.write() as s:
            result = await s.execute(
                update(Generation)
                .where(
                    Generation.id == gen_id,
                    Generation.lease_owner == owner,
                    Generation.status == Status.PROCESSING.value,
                )
                .values(fallback_image=True, updated_at=now)
                .returning(Generation.id)
            )
            if result.first() is None:
                return False
            await s.execute(delete(Image).where(Image.generation_id == gen_id))
            await self._add_images(s, gen_id, account_id, [image], now)
            return True

    # Scale-out ------------------------------------------------------------------

    async def claim_id(self, gen_id: str, owner: str, lease_s: float) -> ClaimedJob | None:
        """Claim one named job delivered by a queue engine: ``PENDING → PROCESSING`` by CAS.

        Returns ``None`` when the row is not PENDING (a duplicate or late delivery, a job
        another worker holds, a finished or cancelled one): the delivery is then a no-op.
        """
        now = self.clock()
        try:
            async with self.db.write() as s:
                row = await self._claim_one(s, gen_id, owner, lease_s, now)
                if row is None:
                    return None
                if row[8] is not None and await self._batch_overfull(s, row[8]):
                    raise _ClaimRefused  # its batch filled up meanwhile: roll the claim back
                await self._insert_event(s, gen_id, "started", {"delivery": row[7]}, now)
        except _ClaimRefused:
            return None
        return await self._claimed(row)

    async def queue_depth(self) -> dict[str, int]:
        """How many generations wait (PENDING) and run (PROCESSING), for ``/health``."""
        live = (Status.PENDING.value, Status.PROCESSING.value)
        async with self.db.read() as s:
            rows = await s.execute(
                select(Generation.status, func.count())
                .where(Generation.status.in_(live))
                .group_by(Generation.status)
            )
            counts = {status: int(count) for status, count in rows}
        return {"pending": counts.get(live[0], 0), "processing": counts.get(live[1], 0)}

    # Batches, templates, cache, links ---------------------------------------------

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
        now = self.clock()
        batch_id = new_id("bat")
        replay: Any = None
        try:
            async with self.db.write() as s:
                locked = await lock_account(s, account_id)
                if idempotency_key:
                    replay = await self._batch_by_key(s, account_id, idempotency_key)
                if replay is None:
                    await self._insert_batch(
                        s,
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
        except IntegrityError:
            if not idempotency_key:
                raise
            async with self.db.read() as s:
                replay = await self._batch_by_key(s, account_id, idempotency_key)
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

    async def _batch_by_key(self, s: AsyncSession, account_id: str, key: str) -> Any:
        return (
            await s.execute(
                select(Batch.id, Batch.request_hash).where(
                    Batch.account_id == account_id, Batch.idempotency_key == key
                )
            )
        ).first()

    async def _insert_batch(
        self,
        s: AsyncSession,
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
        plans = await self._plan_members(s, account_id, members)
        if quota is not None:
            state = await quota_state(s, account_id, quota, now)
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
        await check_budget(s, locked, account_id, sum(usd, Decimal("0")) if usd else None, now)
        total = sum(p.credits for p in plans)
        try:
            remaining = await self._debit(s, locked, account_id, total)
        except InsufficientCredits as exc:
            raise InsufficientCredits(
                f"this batch costs {total} credits; the balance is {exc.balance}",
                balance=exc.balance,
                price=total,
            ) from None
        s.add(
            Batch(
                id=batch_id,
                account_id=account_id,
                concurrency=concurrency,
                size=len(members),
                source=source,
                metadata_=metadata,
                request_id=request_id,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                created_at=now,
            )
        )
        await s.flush()
        for member, plan in zip(members, plans, strict=True):
            gen_id = new_id("gen")
            s.add(
                Generation(
                    id=gen_id,
                    account_id=account_id,
                    project=member.project,
                    source=source,
                    status=Status.PENDING.value,
                    progress=0,
                    prompt=member.prompt,
                    request=member.request,
                    request_hash=member.request_hash,
                    request_id=request_id,
                    route=[],
                    credits=plan.credits,
                    estimated_usd=plan.estimated_usd,
                    run_after=now,
                    created_at=now,
                    updated_at=now,
                    batch_id=batch_id,
                    cache_key=member.cache.key if member.cache else None,
                )
            )
            await s.flush()
            s.add(Event(generation_id=gen_id, type="queued", data={}, created_at=now))
            if remaining is not None and (plan.credits > 0 or plan.match is None):
                s.add(
                    LedgerEntry(
                        account_id=account_id,
                        generation_id=gen_id,
                        kind="debit",
                        credits=-plan.credits,
                        reason=f"generation (batch {batch_id})",
                        actor="system",
                        created_at=now,
                    )
                )
            await self._after_admit(
                s,
                gen_id,
                account_id,
                cache=member.cache,
                match=plan.match,
                entities=member.entities,
                credits=plan.credits,
                now=now,
            )

    async def _plan_members(
        self, s: AsyncSession, account_id: str, members: Sequence[NewGeneration]
    ) -> list[_MemberPlan]:
        """Price each member, with the cache: a hit or follower costs the cache price."""
        plans: list[_MemberPlan] = []
        leaders: dict[str, str] = {}  # cache key → the member index leading it, as a marker
        for index, member in enumerate(members):
            cache = member.cache
            match = await self._cache_match(s, account_id, cache) if cache else None
            if cache is not None and match is None:
                if cache.use and cache.key in leaders:
                    match = _CacheMatch(source_id=leaders[cache.key], done=False)
                else:
                    leaders.setdefault(cache.key, f"#{index}")
            if match is not None and cache is not None:
                plans.append(_MemberPlan(cache.credits, Decimal("0"), match))
            else:
                plans.append(_MemberPlan(member.credits, member.estimated_usd, None))
        return plans

    async def _cache_match(
        self, s: AsyncSession, account_id: str, cache: CacheLookup
    ) -> _CacheMatch | None:
        """An earlier identical SUCCEEDED original to copy, or a running one to follow."""
        if not cache.use:
            return None
        same = (
            Generation.account_id == account_id,
            Generation.cache_key == cache.key,
            Generation.cached_from.is_(None),
        )
        done = (
            await s.execute(
                select(Generation.id, Generation.provider, Generation.model)
                .where(
                    *same,
                    Generation.status == Status.SUCCEEDED.value,
                    Generation.fallback_image.is_(False),
                )
                .order_by(Generation.id.desc())
                .limit(1)
            )
        ).first()
        if done is not None:
            return _CacheMatch(source_id=done[0], done=True, provider=done[1], model=done[2])
        running = await s.scalar(
            select(Generation.id)
            .where(
                *same,
                Generation.status.in_((Status.PENDING.value, Status.PROCESSING.value)),
            )
            .order_by(Generation.id)
            .limit(1)
        )
        if running is not None:
            return _CacheMatch(source_id=running, done=False)
        return None

    async def _after_admit(
        self,
        s: AsyncSession,
        gen_id: str,
        account_id: str,
        *,
        cache: CacheLookup | None,
        match: _CacheMatch | None,
        entities: Sequence[tuple[str, str]],
        credits: int,
        now: datetime,
    ) -> None:
        """In the admission transaction: the entity links, and a cache hit served at once
        or a follower parked behind its leader."""
        for entity_type, entity_id in dict.fromkeys(entities):
            s.add(
                EntityLink(
                    generation_id=gen_id,
                    account_id=account_id,
                    entity_type=entity_type,
                    entity_id=entity_id,
                    created_at=now,
                )
            )
        if cache is None or match is None:
            return
        source: str | None = match.source_id
        if source is not None and source.startswith("#"):
            # the leader is an earlier member of the same batch: find its id by key
            source = await s.scalar(
                select(Generation.id)
                .where(
                    Generation.account_id == account_id,
                    Generation.cache_key == cache.key,
                    Generation.cached_from.is_(None),
                    Generation.status == Status.PENDING.value,
                )
                .order_by(Generation.id)
                .limit(1)
            )
        values: dict[str, Any] = {"cached_from": source}
        if match.done:
            images = list(
                await s.scalars(
                    select(Image).where(Image.generation_id == source).order_by(Image.index)
                )
            )
            values.update(
                status=Status.SUCCEEDED.value,
                progress=100,
                provider=match.provider,
                model=match.model,
                cost_usd=Decimal("0"),
                started_at=now,
                completed_at=now,
                route=[{"provider": CACHE_PROVIDER, "decision": "cached", "cached_from": source}],
            )
            await s.execute(update(Generation).where(Generation.id == gen_id).values(**values))
            await self._add_images(s, gen_id, account_id, images, now)
            await self._add_usage(
                s,
                account_id,
                CACHE_PROVIDER,
                "",
                now,
                ok=True,
                images=len(images),
                credits=credits,
                usd=None,
                provider_ms=None,
            )
            s.add(
                Event(
                    generation_id=gen_id,
                    type="succeeded",
                    data={
                        "provider": match.provider,
                        "model": match.model,
                        "images": len(images),
                        "cached_from": source,
                    },
                    created_at=now,
                )
            )
            return
        await s.execute(update(Generation).where(Generation.id == gen_id).values(**values))
        if source is not None:
            s.add(
                Event(
                    generation_id=gen_id,
                    type="waiting",
                    data={"cached_from": source},
                    created_at=now,
                )
            )

    async def _add_images(
        self,
        s: AsyncSession,
        gen_id: str,
        account_id: str,
        images: Sequence[Image | NewImage],
        now: datetime,
    ) -> None:
        """Image rows for a generation: new results, or a cache hit's copies."""
        if not images:
            return
        rows = [
            {
                "id": new_id("img"),
                "generation_id": gen_id,
                "account_id": account_id,
                "index": img.index,
                "key": img.key,
                "width": img.width,
                "height": img.height,
                "format": img.format,
                "content_type": img.content_type,
                "bytes": img.bytes,
                "sha256": img.sha256,
                "attribution": img.attribution,
                "created_at": now,
            }
            for img in images
        ]
        await s.execute(insert(IMG).values(rows))

    async def _settle_followers(
        self,
        s: AsyncSession,
        leader_id: str,
        now: datetime,
        *,
        images: Sequence[NewImage] | None = None,
        provider: str | None = None,
        model: str | None = None,
        error: str | None = None,
    ) -> None:
        """Finish the generations waiting for ``leader_id``, in the leader's own finishing
        transaction (so no crash can strand them): copies of its images when it succeeded,
        else ``FAILED`` (``cache_leader_failed``) with their debit refunded."""
        rows = (
            await s.execute(
                update(Generation)
                .where(
                    Generation.cached_from == leader_id,
                    Generation.status == Status.PENDING.value,
                )
                .values(
                    **(
                        {
                            "status": Status.SUCCEEDED.value,
                            "progress": 100,
                            "provider": provider,
                            "model": model,
                            "cost_usd": Decimal("0"),
                            "route": [
                                {
                                    "provider": CACHE_PROVIDER,
                                    "decision": "cached",
                                    "cached_from": leader_id,
                                }
                            ],
                        }
                        if images is not None
                        else {
                            "status": Status.FAILED.value,
                            "error_code": "cache_leader_failed",
                            "error_message": (
                                f"the identical generation {leader_id} it waited for "
                                f"{error or 'failed'}"
                            ),
                        }
                    ),
                    started_at=func.coalesce(Generation.started_at, now),
                    completed_at=now,
                    updated_at=now,
                )
                .returning(Generation.id, Generation.account_id, Generation.credits)
            )
        ).all()
        for gen_id, account_id, credits in rows:
            if images is not None:
                await self._add_images(s, gen_id, account_id, images, now)
                await self._add_usage(
                    s,
                    account_id,
                    CACHE_PROVIDER,
                    "",
                    now,
                    ok=True,
                    images=len(images),
                    credits=int(credits),
                    usd=None,
                    provider_ms=None,
                )
                data: dict[str, Any] = {
                    "provider": provider,
                    "model": model,
                    "images": len(images),
                    "cached_from": leader_id,
                }
                s.add(Event(generation_id=gen_id, type="succeeded", data=data, created_at=now))
            else:
                refunded = await self._refund(s, gen_id, "shared generation failed", now)
                data = {
                    "code": "cache_leader_failed",
                    "message": f"the identical generation {leader_id} it waited for "
                    f"{error or 'failed'}",
                    "refunded_credits": refunded,
                    "cached_from": leader_id,
                }
                s.add(Event(generation_id=gen_id, type="failed", data=data, created_at=now))

    async def _free_batch_slot(self, s: AsyncSession, batch_id: str | None) -> None:
        """A running member of batch ``batch_id`` ended: announce waiting members to the
        queue engine (nothing to do for a generation outside a batch).

        On PostgreSQL a trigger hands every row that *becomes* PENDING to the queue
        engine; a member refused a slot (its batch was full) got no job afterwards. Here,
        in the finishing transaction, up to the free slots' worth of waiting members go
        PENDING → _REQUEUE → PENDING (never visible outside this transaction), which
        fires the trigger again. A duplicate delivery is a no-op claim. The polling
        worker of SQLite needs none of this.
        """
        if batch_id is None or self.db.dialect != "postgresql":
            return
        row = (
            await s.execute(select(BATCH.c.id, BATCH.c.concurrency).where(BATCH.c.id == batch_id))
        ).first()
        if row is None or row[1] is None:
            return
        running = await s.scalar(
            select(func.count()).where(
                Generation.batch_id == row[0], Generation.status == Status.PROCESSING.value
            )
        )
        room = int(row[1]) - int(running or 0)
        if room <= 0:
            return
        waiting = list(
            await s.scalars(
                select(Generation.id)
                .where(
                    Generation.batch_id == row[0],
                    Generation.status == Status.PENDING.value,
                    Generation.cached_from.is_(None),
                )
                .order_by(Generation.run_after, Generation.id)
                .limit(room)
            )
        )
        if not waiting:
            return
        for source, target in ((Status.PENDING.value, _REQUEUE), (_REQUEUE, Status.PENDING.value)):
            await s.execute(
                update(Generation)
                .where(Generation.id.in_(waiting), Generation.status == source)
                .values(status=target)
            )

    async def settled_followers(self, leader_id: str, completed_at: datetime | None) -> list[str]:
        """The followers finished together with their leader (for notifications)."""
        if completed_at is None:
            return []
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Generation.id).where(
                    Generation.cached_from == leader_id,
                    Generation.completed_at == completed_at,
                )
            )
            return list(rows)

    def _claimable(self) -> list[Any]:
        """Claim conditions beyond ``PENDING``: not a follower (its leader finishes it),
        and not a member of a batch already running ``concurrency`` members."""
        if _CLAIMABLE:  # built once: constructing these expressions is not free
            return _CLAIMABLE
        running = GEN.alias("running")
        limit = select(BATCH.c.concurrency).where(BATCH.c.id == GEN.c.batch_id).scalar_subquery()
        in_flight = (
            select(func.count())
            .select_from(running)
            .where(
                running.c.batch_id == GEN.c.batch_id,
                running.c.status == Status.PROCESSING.value,
            )
            .scalar_subquery()
        )
        _CLAIMABLE.extend([
            GEN.c.cached_from.is_(None),
            or_(GEN.c.batch_id.is_(None), limit.is_(None), limit > in_flight),
        ])
        return _CLAIMABLE

    async def _within_batch_limits(
        self, s: AsyncSession, rows: Sequence[tuple[str, str | None]]
    ) -> list[str]:
        """Trim claim candidates to each batch's free slots, under a lock of the batch rows
        (PostgreSQL; SQLite has one writer) so concurrent claimers cannot overshoot."""
        batch_ids = sorted({b for _, b in rows if b is not None})
        if not batch_ids:
            return [gen_id for gen_id, _ in rows]
        query = (
            select(Batch.id, Batch.concurrency).where(Batch.id.in_(batch_ids)).order_by(Batch.id)
        )
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        limits = {b: c for b, c in (await s.execute(query)).all() if c is not None}
        room: dict[str, int] = {}
        if limits:
            counts = dict(
                (
                    await s.execute(
                        select(Generation.batch_id, func.count())
                        .where(
                            Generation.batch_id.in_(list(limits)),
                            Generation.status == Status.PROCESSING.value,
                        )
                        .group_by(Generation.batch_id)
                    )
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

    async def _claim_one(
        self, s: AsyncSession, gen_id: str, owner: str, lease_s: float, now: datetime
    ) -> Any:
        """``PENDING → PROCESSING`` of one named, claimable row; its columns or ``None``."""
        result = await s.execute(
            update(GEN)
            .where(GEN.c.id == gen_id, GEN.c.status == Status.PENDING.value, *self._claimable())
            .values(
                status=Status.PROCESSING.value,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                deliveries=GEN.c.deliveries + 1,
                started_at=func.coalesce(GEN.c.started_at, now),
                updated_at=now,
            )
            .returning(*_CLAIM_COLUMNS)
        )
        return result.first()

    async def _batch_overfull(self, s: AsyncSession, batch_id: str) -> bool:
        """After claiming a member: does its batch now run more than its concurrency?"""
        query = select(Batch.concurrency).where(Batch.id == batch_id)
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        limit = await s.scalar(query)
        if limit is None:
            return False
        running = await s.scalar(
            select(func.count()).where(
                Generation.batch_id == batch_id, Generation.status == Status.PROCESSING.value
            )
        )
        return int(running or 0) > limit

    async def get_batch(self, batch_id: str, *, account_id: str | None) -> BatchView:
        """A batch with its members' ids and counts per status; ``NotFound`` for another
        account's."""
        async with self.db.read() as s:
            row = await s.get(Batch, batch_id)
            if row is None or (account_id is not None and row.account_id != account_id):
                raise NotFound(f"batch {batch_id!r} not found")
            members = (
                await s.execute(
                    select(
                        Generation.id,
                        Generation.status,
                        Generation.credits,
                        Generation.completed_at,
                    )
                    .where(Generation.batch_id == batch_id)
                    .order_by(Generation.id)
                )
            ).all()
        return _batch_view(row, members)

    async def list_batches(
        self, *, account_id: str | None, limit: int = 20, cursor: str | None = None
    ) -> list[BatchView]:
        """Newest first; ``cursor`` is the last id of the previous page."""
        query = select(Batch)
        if account_id is not None:
            query = query.where(Batch.account_id == account_id)
        if cursor:
            query = query.where(Batch.id < cursor)
        async with self.db.read() as s:
            batches = list(await s.scalars(query.order_by(Batch.id.desc()).limit(limit)))
            members: dict[str, list[Any]] = {b.id: [] for b in batches}
            if batches:
                rows = await s.execute(
                    select(
                        Generation.batch_id,
                        Generation.id,
                        Generation.status,
                        Generation.credits,
                        Generation.completed_at,
                    )
                    .where(Generation.batch_id.in_(list(members)))
                    .order_by(Generation.id)
                )
                for batch_id, *member in rows:
                    members[str(batch_id)].append(member)
        return [_batch_view(b, members[b.id]) for b in batches]

    async def cancel_batch(
        self, batch_id: str, *, account_id: str | None
    ) -> tuple[list[str], list[str]]:
        """Cancel a batch: PENDING members end now (refunded), PROCESSING ones are flagged
        for their workers. Returns ``(canceled_ids, flagged_ids)``."""
        now = self.clock()
        await self.get_batch(batch_id, account_id=account_id)  # ownership → NotFound
        async with self.db.write() as s:
            # members first, the batch row last: the claim locks them in the same order
            canceled = [
                r[0]
                for r in await s.execute(
                    update(Generation)
                    .where(
                        Generation.batch_id == batch_id,
                        Generation.status == Status.PENDING.value,
                    )
                    .values(
                        status=Status.CANCELED.value,
                        error_code="canceled",
                        error_message="canceled before it started (batch canceled)",
                        completed_at=now,
                        updated_at=now,
                    )
                    .returning(Generation.id)
                )
            ]
            for gen_id in canceled:
                refunded = await self._refund(s, gen_id, "batch canceled before start", now)
                s.add(
                    Event(
                        generation_id=gen_id,
                        type="canceled",
                        data={"refunded_credits": refunded, "batch_id": batch_id},
                        created_at=now,
                    )
                )
                await self._settle_followers(s, gen_id, now, error="was canceled")
            flagged = [
                r[0]
                for r in await s.execute(
                    update(Generation)
                    .where(
                        Generation.batch_id == batch_id,
                        Generation.status == Status.PROCESSING.value,
                    )
                    .values(cancel_requested=True, updated_at=now)
                    .returning(Generation.id)
                )
            ]
            await s.execute(
                update(Batch)
                .where(Batch.id == batch_id, Batch.canceled_at.is_(None))
                .values(canceled_at=now)
            )
        return canceled, flagged

    async def create_template(
        self,
        account_id: str,
        *,
        name: str,
        text: str,
        placeholders: list[str],
        description: str | None,
    ) -> TemplateView:
        """Store a prompt template; ``Conflict`` when the account has one of that name."""
        row = PromptTemplate(
            id=new_id("tpl"),
            account_id=account_id,
            name=name,
            text=text,
            placeholders=placeholders,
            description=description,
            created_at=self.clock(),
        )
        try:
            async with self.db.write() as s:
                s.add(row)
        except IntegrityError:
            raise Conflict(
                f"a template named {name!r} already exists", code="template_exists"
            ) from None
        return _template_view(row)

    async def find_template(self, account_id: str, ref: str) -> TemplateView | None:
        """The account's template by id or name."""
        column = PromptTemplate.id if ref.startswith("tpl_") else PromptTemplate.name
        async with self.db.read() as s:
            row = await s.scalar(
                select(PromptTemplate).where(PromptTemplate.account_id == account_id, column == ref)
            )
            return _template_view(row) if row is not None else None

    async def list_templates(self, account_id: str) -> list[TemplateView]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(PromptTemplate)
                .where(PromptTemplate.account_id == account_id)
                .order_by(PromptTemplate.name)
            )
            return [_template_view(r) for r in rows]

    async def delete_template(self, account_id: str, ref: str) -> TemplateView:
        found = await self.find_template(account_id, ref)
        if found is None:
            raise NotFound(f"template {ref!r} not found")
        async with self.db.write() as s:
            await s.execute(delete(PromptTemplate).where(PromptTemplate.id == found.id))
        return found

    async def add_links(
        self, gen_id: str, entities: Sequence[tuple[str, str]], *, account_id: str | None
    ) -> list[LinkView]:
        """Link a generation to entities (existing links are kept once); its links after."""
        view = await self.get_generation(gen_id, account_id=account_id)  # → NotFound
        now = self.clock()
        async with self.db.write() as s:
            existing = set(
                (
                    await s.execute(
                        select(EntityLink.entity_type, EntityLink.entity_id).where(
                            EntityLink.generation_id == gen_id
                        )
                    )
                ).all()
            )
            for entity_type, entity_id in dict.fromkeys(entities):
                if (entity_type, entity_id) not in existing:
                    s.add(
                        EntityLink(
                            generation_id=gen_id,
                            account_id=view.account_id,
                            entity_type=entity_type,
                            entity_id=entity_id,
                            created_at=now,
                        )
                    )
        return await self.list_links(gen_id, account_id=account_id)

    async def list_links(self, gen_id: str, *, account_id: str | None) -> list[LinkView]:
        await self.get_generation(gen_id, account_id=account_id)  # → NotFound
        async with self.db.read() as s:
            rows = await s.scalars(
                select(EntityLink).where(EntityLink.generation_id == gen_id).order_by(EntityLink.id)
            )
            return [
                LinkView(
                    generation_id=r.generation_id,
                    type=r.entity_type,
                    id=r.entity_id,
                    created_at=r.created_at,
                )
                for r in rows
            ]

    async def get_image(self, image_id: str, *, account_id: str | None) -> tuple[ImageView, str]:
        """An image and its generation id; ``NotFound`` for another account's."""
        async with self.db.read() as s:
            row = await s.get(Image, image_id)
            if row is None or (account_id is not None and row.account_id != account_id):
                raise NotFound(f"image {image_id!r} not found")
            return self._image_view(row), row.generation_id

    async def set_approval(
        self, image_id: str, approval: str, *, account_id: str | None
    ) -> tuple[ImageView, str]:
        """Set an image's approval status (``pending``, ``approved``, ``rejected``)."""
        await self.get_image(image_id, account_id=account_id)  # ownership → NotFound
        async with self.db.write() as s:
            await s.execute(
                update(Image)
                .where(Image.id == image_id)
                .values(approval=approval, approval_updated_at=self.clock())
            )
        return await self.get_image(image_id, account_id=account_id)

    def _image_view(self, i: Image) -> ImageView:
        return ImageView(
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
            approval=i.approval,
        )


@dataclass(frozen=True)
class WebhookDeliveryView:
    id: str
    generation_id: str
    account_id: str
    event: str
    url: str
    status: str
    attempts: int
    response_status: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


def _config_record(row: ConfigVersion) -> dict[str, Any]:
    return {
        "version": int(row.id),
        "data": dict(row.data or {}),
        "actor": row.actor,
        "created_at": row.created_at,
    }


#: the pseudo-provider of cache hits in usage and routes
CACHE_PROVIDER = "cache"
#: a status only ever seen inside one transaction (see ``Store._free_batch_slot``)
_REQUEUE = "_REQUEUE"


class _ClaimRefused(Exception):
    """Rolls a claim back (its batch is at its concurrency)."""


@dataclass(frozen=True)
class CacheLookup:
    """A request's dedup-cache key; ``use``: look for a hit or a leader to follow."""

    key: str
    use: bool
    #: what a hit or a follower costs (``credits.cache_price``)
    credits: int = 0


@dataclass(frozen=True)
class NewGeneration:
    """One member of a batch, priced and ready to insert."""

    project: str
    prompt: str
    request: dict[str, Any]
    request_hash: str
    credits: int
    estimated_usd: Decimal | None
    cache: CacheLookup | None = None
    entities: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class _CacheMatch:
    #: a generation id, or ``#<index>`` for an earlier member of the same batch
    source_id: str
    #: True: SUCCEEDED, copy it now; False: running, follow it
    done: bool
    provider: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class _MemberPlan:
    credits: int
    estimated_usd: Decimal | None
    match: _CacheMatch | None


@dataclass(frozen=True)
class BatchView:
    id: str
    account_id: str
    concurrency: int | None
    size: int
    source: str
    metadata: dict[str, Any]
    request_id: str | None
    created_at: datetime
    canceled_at: datetime | None
    completed_at: datetime | None
    #: generation id → status, in admission order
    members: dict[str, str]
    counts: dict[str, int]
    credits: int
    #: returned for a reused Idempotency-Key rather than admitted now
    replayed: bool = False

    @property
    def generation_ids(self) -> list[str]:
        return list(self.members)

    @property
    def status(self) -> str:
        """``running`` while a member is not terminal, then ``canceled`` or ``completed``."""
        if self.counts[Status.PENDING.value] or self.counts[Status.PROCESSING.value]:
            return "canceling" if self.canceled_at else "running"
        return "canceled" if self.canceled_at else "completed"


@dataclass(frozen=True)
class TemplateView:
    id: str
    account_id: str
    name: str
    text: str
    placeholders: list[str]
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class LinkView:
    generation_id: str
    type: str
    id: str
    created_at: datetime


def _batch_view(row: Batch, members: Sequence[Any]) -> BatchView:
    counts = {status.value: 0 for status in Status}
    completed: list[datetime] = []
    for _, status, _, completed_at in members:
        counts[status] += 1
        if completed_at is not None:
            completed.append(completed_at)
    done = counts[Status.PENDING.value] + counts[Status.PROCESSING.value] == 0
    return BatchView(
        id=row.id,
        account_id=row.account_id,
        concurrency=row.concurrency,
        size=row.size,
        source=row.source,
        metadata=dict(row.metadata_ or {}),
        request_id=row.request_id,
        created_at=row.created_at,
        canceled_at=row.canceled_at,
        completed_at=max(completed) if done and completed else None,
        members={m[0]: m[1] for m in members},
        counts=counts,
        credits=sum(int(m[2]) for m in members),
    )


def _template_view(row: PromptTemplate) -> TemplateView:
    return TemplateView(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        text=row.text,
        placeholders=list(row.placeholders or []),
        description=row.description,
        created_at=row.created_at,
    )
