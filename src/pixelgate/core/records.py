"""The plain records core passes to and gets from its stores (no I/O, no SQL).

:mod:`pixelgate.db` builds them from rows and takes them in; :mod:`pixelgate.core` types
against them and against the protocols of :mod:`pixelgate.core.ports`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pixelgate.core.models import GenerationView, Status

if TYPE_CHECKING:
    from pixelgate.config import TierSettings

__all__ = [
    "CACHE_PROVIDER",
    "AdmitResult",
    "BatchView",
    "CacheLookup",
    "ClaimedJob",
    "KeyInfo",
    "LinkView",
    "NewGeneration",
    "NewImage",
    "Quota",
    "QuotaState",
    "RunningEvent",
    "TemplateView",
    "WebhookDeliveryView",
]

#: the pseudo-provider of cache hits in usage and routes
CACHE_PROVIDER = "cache"


@dataclass(frozen=True)
class Quota:
    """At most ``limit`` generations per ``window_s`` seconds: fixed windows aligned to the
    Unix epoch (a day's resets at UTC midnight, as seed 004's) or the sliding last
    ``window_s`` seconds."""

    limit: int
    window_s: int
    fixed: bool = False

    @classmethod
    def of_tier(cls, tier: TierSettings) -> Quota | None:
        """A tier's generation quota; None for an unlimited tier."""
        if tier.daily_limit is None:
            return None
        return cls(tier.daily_limit, tier.window_s, fixed=tier.window == "fixed")


@dataclass(frozen=True)
class QuotaState:
    limit: int
    remaining: int
    reset_at: datetime
    window_s: int


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
