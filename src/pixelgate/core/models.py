"""Domain models: the one validated generation request, and read views of stored rows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "TERMINAL",
    "AccountView",
    "EventView",
    "GenerationRequest",
    "GenerationView",
    "ImageView",
    "Status",
]

DEFAULT_SIDE = 1024
MIN_SIDE = 16
_ASPECT = re.compile(r"^(\d{1,2}):(\d{1,2})$")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ImageFormat = Literal["png", "jpeg", "webp"]


class Status(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})


class GenerationRequest(BaseModel):
    """The validated request every entry point builds (native, seeds, OpenAI, CLI, Python).

    Limits that depend on configuration (prompt length, ``n``, dimensions) are
    checked at admission, where the settings are known.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    provider: str | None = None
    providers: list[str] | None = None
    model: str | None = None
    n: int = Field(1, ge=1)
    width: int | None = Field(None, ge=MIN_SIDE)
    height: int | None = Field(None, ge=MIN_SIDE)
    aspect_ratio: str | None = None
    format: ImageFormat = "png"
    quality: str | None = None
    style: str | None = None
    background: Literal["auto", "transparent", "opaque"] | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    reference_image_url: str | None = None
    project: str = "default"
    max_cost_per_image: Decimal | None = Field(None, ge=0)
    race: int | None = Field(None, ge=1, le=8)
    metadata: dict[str, Any] = Field(default_factory=dict)
    webhook_url: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format", mode="before")
    @classmethod
    def _normalise_format(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower()
            return "jpeg" if value == "jpg" else value
        return value

    @field_validator("aspect_ratio")
    @classmethod
    def _check_aspect(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _ASPECT.match(value)
        if not match or int(match[1]) == 0 or int(match[2]) == 0:
            raise ValueError("must look like 16:9")
        return value

    @field_validator("project")
    @classmethod
    def _check_project(cls, value: str) -> str:
        if not _PROJECT.match(value):
            raise ValueError("letters, digits, '.', '_' or '-' (at most 64)")
        return value

    @model_validator(mode="after")
    def _check_pairs(self) -> GenerationRequest:
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise ValueError(f"{missing} is required together with the other dimension")
        if self.provider and self.providers:
            raise ValueError("give provider or providers, not both")
        return self

    def dimensions(self) -> tuple[int, int]:
        """Width and height: explicit, else from the aspect ratio (long side 1024)."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        if self.aspect_ratio:
            w, h = (int(x) for x in self.aspect_ratio.split(":"))
            if w >= h:
                return DEFAULT_SIDE, max(MIN_SIDE, round(DEFAULT_SIDE * h / w / 8) * 8)
            return max(MIN_SIDE, round(DEFAULT_SIDE * w / h / 8) * 8), DEFAULT_SIDE
        return DEFAULT_SIDE, DEFAULT_SIDE

    def candidate_names(self) -> list[str]:
        if self.providers:
            return list(self.providers)
        return [self.provider] if self.provider else []


@dataclass
class ImageView:
    id: str
    index: int
    key: str
    url: str
    width: int
    height: int
    format: str
    content_type: str
    bytes: int
    sha256: str
    attribution: dict[str, Any] | None = None


@dataclass
class EventView:
    id: int
    generation_id: str
    type: str
    data: dict[str, Any]
    created_at: datetime


@dataclass
class GenerationView:
    """A generation as read from the database, with its images."""

    id: str
    account_id: str
    account_name: str
    project: str
    status: Status
    progress: int
    prompt: str
    request: dict[str, Any]
    source: str
    provider: str | None
    model: str | None
    retry_count: int
    last_retry_at: datetime | None
    error_code: str | None
    error_message: str | None
    credits: int
    cost_usd: Decimal | None
    estimated_usd: Decimal | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    provider_ms: int | None
    request_id: str | None
    cancel_requested: bool
    route: list[dict[str, Any]] = field(default_factory=list)
    images: list[ImageView] = field(default_factory=list)
    queue_position: int | None = None
    fallback_image: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def timings(self) -> dict[str, int | None]:
        def ms(a: datetime | None, b: datetime | None) -> int | None:
            return None if a is None or b is None else int((b - a).total_seconds() * 1000)

        return {
            "queue_ms": ms(self.created_at, self.started_at),
            "provider_ms": self.provider_ms,
            "total_ms": ms(self.created_at, self.completed_at),
        }


@dataclass
class AccountView:
    id: str
    name: str
    tier: str
    credits: int | None
    created_at: datetime
    preferred_providers: list[str] = field(default_factory=list)
