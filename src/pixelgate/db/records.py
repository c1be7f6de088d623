"""What the store hands out and takes in: plain records, and the views built from rows.

Rows come from SQLAlchemy Core (``select(GEN)``…): their columns are attributes, so one
builder serves a row read now and a row just written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table

from pixelgate.core.models import AccountView, GenerationView, ImageView, Status
from pixelgate.core.records import (
    CACHE_PROVIDER,
    AdmitResult,
    BatchView,
    CacheLookup,
    ClaimedJob,
    KeyInfo,
    LinkView,
    NewGeneration,
    NewImage,
    RunningEvent,
    TemplateView,
    WebhookDeliveryView,
)
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

UrlFor = Callable[[str], str]


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
    g: Any,
    account_name: str,
    images: Sequence[Any],
    url_for: UrlFor,
    *,
    request: dict[str, Any] | None = None,
    route: list[dict[str, Any]] | None = None,
) -> GenerationView:
    """The view of a generation row (ORM object, Core row or the values just written);
    ``request`` and ``route``, when given, stand for the row's (a finish knows them and
    does not read them back)."""
    return GenerationView(
        id=g.id,
        account_id=g.account_id,
        account_name=account_name,
        project=g.project,
        status=Status(g.status),
        progress=g.progress,
        prompt=g.prompt,
        request=dict(g.request if request is None else request),
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
        route=list((g.route if route is None else route) or []),
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
