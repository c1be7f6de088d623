"""SQLAlchemy tables. Portable SQL only: the same migrations run on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Account",
    "Alert",
    "ApiKey",
    "Base",
    "Batch",
    "ConfigVersion",
    "EntityLink",
    "Event",
    "Generation",
    "Image",
    "LedgerEntry",
    "PromptTemplate",
    "UsageDaily",
    "WebhookDelivery",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
USD = Numeric(14, 6)
# BigInteger primary keys autoincrement on PostgreSQL; SQLite needs INTEGER for rowid aliasing.
EventId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    # On SQLite, one C-level conversion instead of two Python layers (this decorator's,
    # then SQLAlchemy's format string): 3.3 → 1.5 µs, and a job binds a dozen or more
    # timestamps in the group-commit thread. The text is SQLAlchemy's SQLite format
    # (tests/unit/test_utc_datetime.py), so stored values read back the same.
    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            zone = value.tzinfo
            if zone is UTC:  # what utcnow() gives: one call, the "+00:00" cut off
                return value.isoformat(" ", "microseconds")[:-6]
            if zone is None:
                raise ValueError("naive datetime given to a UTC column")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process


def _ts() -> Any:
    return UTCDateTime()


class Account(Base):
    """An account (the seeds' instance or user): tier, credits, budgets, preferences."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    tier: Mapped[str] = mapped_column(String(32), default="FREE")
    #: cached sum of the ledger; NULL means unmetered (no credit checks)
    credits: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: "refund" (seed 003) or "keep" (seed 004) on final failure
    credit_policy: Mapped[str] = mapped_column(String(16), default="refund")
    daily_budget_usd: Mapped[Decimal | None] = mapped_column(USD, nullable=True)
    preferred_providers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(_ts())


class ApiKey(Base):
    """An API key, stored as a SHA-256 hash (keys are 256-bit random, so no slow KDF)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(_ts())
    revoked_at: Mapped[datetime | None] = mapped_column(_ts(), nullable=True)


class Generation(Base):
    """One generation job: the request, its state, its lease, its cost and timings."""

    __tablename__ = "generations"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key"),
        Index("ix_generations_claim", "status", "run_after"),
        # covering: today's spend (every budgeted admission) and an account's listing
        # read the index alone, not a row per generation of the day
        Index(
            "ix_generations_account_spend",
            "account_id",
            "created_at",
            "status",
            "cost_usd",
            "estimated_usd",
        ),
        # the account's project names: a DISTINCT over the index, not its generations
        Index("ix_generations_account_project", "account_id", "project"),
        Index("ix_generations_batch", "batch_id", "status"),
        Index("ix_generations_cache", "account_id", "cache_key"),
        Index("ix_generations_cached_from", "cached_from"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    project: Mapped[str] = mapped_column(String(64), default="default")
    source: Mapped[str] = mapped_column(String(32), default="native")
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    prompt: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    request_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: the provider's own job id, saved before polling so a restart resumes it
    provider_job_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    provider_job_provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    route: Mapped[list[Any]] = mapped_column(JSON, default=list)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    last_retry_at: Mapped[datetime | None] = mapped_column(_ts(), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    fallback_image: Mapped[bool] = mapped_column(Boolean, default=False)

    credits: Mapped[int] = mapped_column(Integer, default=0)
    estimated_usd: Mapped[Decimal | None] = mapped_column(USD, nullable=True)
    cost_usd: Mapped[Decimal | None] = mapped_column(USD, nullable=True)
    provider_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)

    # the embedded queue: claim by compare-and-set, lease renewed by the worker
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(_ts(), nullable=True)
    run_after: Mapped[datetime] = mapped_column(_ts())
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    created_at: Mapped[datetime] = mapped_column(_ts())
    updated_at: Mapped[datetime] = mapped_column(_ts())
    started_at: Mapped[datetime | None] = mapped_column(_ts(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(_ts(), nullable=True)

    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    #: hash of the normalised request (set when it has a fixed seed): the dedup-cache key
    cache_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the generation whose images this one reuses (a cache hit), or waits for (a follower)
    cached_from: Mapped[str | None] = mapped_column(ForeignKey("generations.id"), nullable=True)


class Image(Base):
    __tablename__ = "images"
    # a key is shared by the images of a generation and of its cache hits
    __table_args__ = (UniqueConstraint("generation_id", "index"), Index("ix_images_key", "key"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(1024))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    content_type: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    attribution: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(_ts())
    #: pending | approved | rejected
    approval: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    approval_updated_at: Mapped[datetime | None] = mapped_column(_ts(), nullable=True)


class Event(Base):
    """Per-generation events with increasing ids (SSE ``Last-Event-ID`` resumes from them)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_generation_id_id", "generation_id", "id"),)

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"))
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(_ts())


class LedgerEntry(Base):
    """Append-only credits ledger. One debit and at most one refund per generation."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("generation_id", "kind"),
        Index("ix_ledger_account_created", "account_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id"), nullable=True)
    #: debit | refund | grant | revoke
    kind: Mapped[str] = mapped_column(String(16))
    credits: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(_ts())


class UsageDaily(Base):
    """Usage per account, UTC day, provider and model."""

    __tablename__ = "usage_daily"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    credits: Mapped[int] = mapped_column(BigInteger, default=0)
    usd: Mapped[Decimal] = mapped_column(USD, default=Decimal("0"))
    latency_ms_total: Mapped[int] = mapped_column(BigInteger, default=0)


class ConfigVersion(Base):
    """Versioned hot configuration set through the admin API."""

    __tablename__ = "config_versions"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(_ts())


class WebhookDelivery(Base):
    """One webhook delivery (a generation's terminal event to one URL) and its attempts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("generation_id", "event"),
        Index("ix_webhook_deliveries_account_created", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    #: generation.succeeded | generation.failed | generation.canceled
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    #: the exact body that was signed and sent
    payload: Mapped[str] = mapped_column(Text)
    #: pending | delivered | failed
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(_ts())
    updated_at: Mapped[datetime] = mapped_column(_ts())
    delivered_at: Mapped[datetime | None] = mapped_column(_ts(), nullable=True)


class Batch(Base):
    """A batch of generations admitted together; ``concurrency`` bounds its running members."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key"),
        Index("ix_batches_account_created", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    #: members PROCESSING at once at most (None: no bound beyond the workers')
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(32), default="native")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: hash of the batch request, to tell a replay from a reused Idempotency-Key
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(_ts())
    canceled_at: Mapped[datetime | None] = mapped_column(_ts(), nullable=True)


class PromptTemplate(Base):
    """A stored prompt with named ``{placeholders}``; names are unique per account."""

    __tablename__ = "prompt_templates"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    placeholders: Mapped[list[Any]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(_ts())


class EntityLink(Base):
    """A link from a generation to an external entity ``{type, id}`` (seed 002)."""

    __tablename__ = "entity_links"
    __table_args__ = (
        UniqueConstraint("generation_id", "entity_type", "entity_id"),
        Index("ix_entity_links_entity", "account_id", "entity_type", "entity_id"),
    )

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(_ts())


class Alert(Base):
    """An alert raised by a rule (seed 001): firing until resolved, then history.

    ``active_key`` is ``rule:subject`` while firing and NULL once resolved; being unique,
    it lets every process evaluate the rules while only one of them raises an alert.
    """

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_raised", "raised_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rule: Mapped[str] = mapped_column(String(64))
    #: the provider, or "*" for rules over all providers
    subject: Mapped[str] = mapped_column(String(64))
    active_key: Mapped[str | None] = mapped_column(String(160), unique=True, nullable=True)
    #: firing | resolved
    status: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Numeric(18, 6, asdecimal=False))
    threshold: Mapped[float] = mapped_column(Numeric(18, 6, asdecimal=False))
    message: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(_ts())
    resolved_at: Mapped[datetime | None] = mapped_column(_ts(), nullable=True)
