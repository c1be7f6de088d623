"""Response models of the native API, mirroring ``pixelgate.api.schemas`` (``generation_body``).

Requests are :class:`pixelgate.core.models.GenerationRequest`, the very model the server
validates. Responses keep fields the server adds later (``extra="allow"``), so an older
client reads a newer server.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pixelgate.core.models import TERMINAL, Status

__all__ = [
    "Account",
    "AccountSummary",
    "ApiKey",
    "Batch",
    "Cost",
    "ErrorInfo",
    "Estimate",
    "Event",
    "Generation",
    "GenerationPage",
    "Image",
    "ModelInfo",
    "ProviderHealth",
    "ProviderInfo",
    "Status",
    "Timings",
]

#: event types after which a generation's stream ends
TERMINAL_EVENTS = frozenset({"succeeded", "failed", "canceled"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ErrorInfo(_Body):
    """Why a generation failed: pixelgate's error code and a message."""

    code: str
    message: str | None = None


class Cost(_Body):
    credits: int = 0
    usd: Decimal | None = None
    estimated_usd: Decimal | None = None


class Timings(_Body):
    queue_ms: int | None = None
    provider_ms: int | None = None
    total_ms: int | None = None


class Image(_Body):
    """One stored image of a generation; its bytes are at ``url`` (see ``download``)."""

    id: str | None = None
    url: str
    key: str
    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    approval: str | None = None
    attribution: dict[str, Any] | None = None


class Generation(_Body):
    """A generation as ``GET /v1/generations/{id}`` answers it."""

    id: str
    object: str = "generation"
    status: Status
    progress: int = 0
    prompt: str = ""
    project: str | None = None
    provider: str | None = None
    model: str | None = None
    retry_count: int = 0
    last_retry_at: datetime | None = None
    created_at: datetime
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    error: ErrorInfo | None = None
    cost: Cost = Field(default_factory=Cost)
    timings: Timings = Field(default_factory=Timings)
    images: list[Image] = Field(default_factory=list)
    route: list[dict[str, Any]] = Field(default_factory=list)
    request: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = None
    queue_position: int | None = None
    eta_ms: int | None = None
    cancel_requested: bool = False
    fallback_image: bool = False
    cached: bool = False
    cached_from: str | None = None
    batch_id: str | None = None

    @property
    def terminal(self) -> bool:
        """SUCCEEDED, FAILED or CANCELED: nothing will change any more."""
        return self.status in TERMINAL

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCEEDED


class GenerationPage(_Body):
    """One page of ``GET /v1/generations``, newest first; pass ``next_cursor`` for the next."""

    data: list[Generation]
    has_more: bool = False
    next_cursor: str | None = None


class Event(_Body):
    """One server-sent event of a generation (``queued``, ``progress``, ``succeeded``…)."""

    id: int | None = None
    type: str
    generation_id: str
    created_at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


class ModelInfo(_Body):
    name: str
    price_usd: Decimal | None = None
    capabilities: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None


class ProviderHealth(_Body):
    healthy: bool
    status: str
    detail: str | None = None


class ProviderInfo(_Body):
    """A provider of the catalog: its models, capabilities, prices and health."""

    name: str
    kind: str
    configured: bool
    default_model: str | None = None
    models: list[ModelInfo] = Field(default_factory=list)
    health: ProviderHealth | None = None


class Estimate(_Body):
    """What a request would cost (``POST /v1/estimate``), without running it."""

    credits: int
    usd: Decimal | None = None
    provider: str | None = None
    model: str | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    balance: int | None = None
    affordable: bool = True


class Account(_Body):
    """Balance, tier, limits left and budget of an account (``GET /v1/account``)."""

    id: str
    name: str
    tier: str
    credits: int | None = None
    metered: bool = False
    credit_policy: str | None = None
    limits: dict[str, Any] = Field(default_factory=dict)
    budget: dict[str, Any] | None = None
    spent_today_usd: Decimal | None = None
    preferred_providers: list[str] = Field(default_factory=list)
    projects: list[Any] = Field(default_factory=list)
    email: str | None = None
    webhook_url: str | None = None
    created_at: datetime | None = None


class AccountSummary(_Body):
    """An account as the admin list shows it."""

    id: str
    name: str
    tier: str
    credits: int | None = None
    created_at: datetime | None = None
    disabled: bool = False


class ApiKey(_Body):
    """An API key; ``key`` (the secret) is only there when it was just created."""

    id: str
    account: str | None = None
    admin: bool = False
    key: str | None = None


class Batch(_Body):
    """A batch of generations admitted together (``/v1/batches``)."""

    id: str
    object: str = "batch"
    status: str
    concurrency: int | None = None
    size: int
    counts: dict[str, int] = Field(default_factory=dict)
    generation_ids: list[str] = Field(default_factory=list)
    cost: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    canceled_at: datetime | None = None
    completed_at: datetime | None = None
    request_id: str | None = None

    @property
    def terminal(self) -> bool:
        """Every member finished (``completed``) or the batch was ``canceled``."""
        return self.status in ("completed", "canceled")
