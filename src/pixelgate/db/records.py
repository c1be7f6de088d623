"""What the store hands out and takes in: plain records, and the views built from rows.

Rows come from SQLAlchemy Core (``select(GEN)``…): their columns are attributes, so one
builder serves a row read now and a row just written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table

from pixelgate.core.models import AccountView, GenerationView, ImageView, Status
from pixelgate.db.billing import QuotaState
from pixelgate.db.tables import (
    Batch,
    ConfigVersion,
    EntityLink,
    Event,
    Generation,
    Image,
    LedgerEntry,
    PromptTemplate,
    WebhookDelivery,
)

__all__ = [
    "BATCH",
    "CACHE_PROVIDER",
    "CONFIG",
    "DELIVERIES",
    "EVT",
    "GEN",
    "IMG",
    "LEDGER",
    "LINKS",
    "TEMPLATES",
    "AdmitResult",
    "BatchView",
    "CacheLookup",
    "ClaimedJob",
    "KeyInfo",
    "LinkView",
    "NewGeneration",
    "NewImage",
    "RunningEvent",
    "TemplateView",
    "WebhookDeliveryView",
    "account_view",
    "batch_view",
    "generation_view",
    "image_view",
]

# The tables themselves: Core statements skip the ORM's per-statement work (entity
# compilation, identity map, flush), which was most of a job's CPU (docs/benchmarks.md).
GEN = cast(Table, Generation.__table__)
EVT = cast(Table, Event.__table__)
IMG = cast(Table, Image.__table__)
BATCH = cast(Table, Batch.__table__)
LEDGER = cast(Table, LedgerEntry.__table__)
LINKS = cast(Table, EntityLink.__table__)
TEMPLATES = cast(Table, PromptTemplate.__table__)
CONFIG = cast(Table, ConfigVersion.__table__)
DELIVERIES = cast(Table, WebhookDelivery.__table__)

#: the pseudo-provider of cache hits in usage and routes
CACHE_PROVIDER = "cache"

UrlFor = Callable[[str], str]


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
    #: the job, when admission leased it to this process's worker (``lease_to``)
    job: ClaimedJob | None = None


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
    #: admitted leased to this worker (still PENDING): its start is written with its
    #: first running events, not by a claim
    handed_over: bool = False


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


def account_view(row: Any) -> AccountView:
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


def image_view(row: Any, url_for: UrlFor) -> ImageView:
    return ImageView(
        id=row.id,
        index=row.index,
        key=row.key,
        url=url_for(row.key),
        width=row.width,
        height=row.height,
        format=row.format,
        content_type=row.content_type,
        bytes=row.bytes,
        sha256=row.sha256,
        attribution=row.attribution,
        approval=row.approval,
    )


def generation_view(
    g: Any, account_name: str, images: Sequence[Any], url_for: UrlFor
) -> GenerationView:
    """The view of a generation row (ORM object, Core row or the values just written)."""
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
        images=[image_view(i, url_for) for i in images],
    )


def batch_view(row: Any, members: Sequence[Any]) -> BatchView:
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
        metadata=dict(row._mapping["metadata"] or {}),
        request_id=row.request_id,
        created_at=row.created_at,
        canceled_at=row.canceled_at,
        completed_at=max(completed) if done and completed else None,
        members={m[0]: m[1] for m in members},
        counts=counts,
        credits=sum(int(m[2]) for m in members),
    )


def template_view(row: Any) -> TemplateView:
    return TemplateView(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        text=row.text,
        placeholders=list(row.placeholders or []),
        description=row.description,
        created_at=row.created_at,
    )
