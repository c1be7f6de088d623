"""Domain models: the one validated generation request, and read views of stored rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pixelgate.core.bounds import (
    MAX_N,
    MAX_NAME_LENGTH,
    MAX_SIDE,
    MAX_TEXT_LENGTH,
    MAX_USD,
    URL_PATTERN,
    BoundedJson,
    ShortText,
)
from pixelgate.errors import UnsafeURL
from pixelgate.media.fetch import MAX_URL_LENGTH, check_url_syntax
from pixelgate.providers.base import MAX_PARTIAL_IMAGES

__all__ = [
    "TERMINAL",
    "AccountView",
    "EntityRef",
    "EventView",
    "GenerationRequest",
    "GenerationView",
    "ImageView",
    "PromptContext",
    "Status",
]

DEFAULT_SIDE = 1024
MIN_SIDE = 16
#: ``W:H`` with each side 1-99 (``16:9``, ``01:1``)
ASPECT_PATTERN = r"^(0?[1-9]|[1-9][0-9]):(0?[1-9]|[1-9][0-9])$"
PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: ``svg`` only for vector models (routing checks the model's ``output_formats``)
ImageFormat = Literal["png", "jpeg", "webp", "svg"]
#: storage keys of uploaded inputs: ``inputs/<account id>/<yyyy>/<mm>/<inp id>.<ext>``
INPUT_KEY_PATTERN = r"^inputs/[a-z]+_[a-z0-9]+/\d{4}/\d{2}/inp_[a-z0-9]+\.(png|jpg|webp)$"
#: entity types of entity links (``character``, ``location``, ``story:chapter``…)
ENTITY_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
MAX_ENTITIES = 50
MAX_CONTEXT_LENGTH = 2000
MAX_PROVIDERS = 32
#: a template's placeholders: how many, and each value's length
MAX_INPUTS = 64
MAX_INPUT_LENGTH = 4000


class Status(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})


class PromptContext(BaseModel):
    """Narrative context that enriches the prompt (rules in ``docs/prompts.md``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: Literal["portrait", "location", "scene"]
    text: str = Field(min_length=1, max_length=MAX_CONTEXT_LENGTH)


class EntityRef(BaseModel):
    """An external entity a generation is linked to (a character, a location…)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: str = Field(pattern=ENTITY_TYPE_PATTERN)
    id: str = Field(min_length=1, max_length=255)


class GenerationRequest(BaseModel):
    """The validated request every entry point builds (native, seeds, OpenAI, CLI, Python).

    Limits that depend on configuration (prompt length, ``n``, dimensions) are
    checked at admission, where the settings are known. Integers and booleans are strict
    (``true`` is not 1, ``0`` is not false); multipart forms convert their text first.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    #: a stored prompt template (name or id) rendered with ``inputs``: replaces ``prompt``
    template: str | None = Field(None, min_length=1, max_length=64)
    prompt: str = Field("", max_length=MAX_TEXT_LENGTH, validate_default=True)
    negative_prompt: str | None = Field(None, max_length=MAX_TEXT_LENGTH)
    provider: ShortText | None = None
    providers: list[ShortText] | None = Field(None, max_length=MAX_PROVIDERS)
    model: ShortText | None = None
    n: StrictInt = Field(1, ge=1, le=MAX_N)
    width: StrictInt | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE)
    height: StrictInt | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE)
    aspect_ratio: str | None = Field(None, pattern=ASPECT_PATTERN)
    format: ImageFormat = "png"
    quality: ShortText | None = None
    style: ShortText | None = None
    background: Literal["auto", "transparent", "opaque"] | None = None
    seed: StrictInt | None = Field(None, ge=0, le=2**32 - 1)
    reference_image_url: str | None = Field(None, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)
    project: str = Field("default", pattern=PROJECT_PATTERN)
    max_cost_per_image: Decimal | None = Field(None, ge=0, le=MAX_USD)
    race: StrictInt | None = Field(None, ge=1, le=8)
    #: automatic choice for this request: cost, quality or latency (``policy`` also accepted)
    routing_policy: Literal["cost", "quality", "latency"] | None = Field(
        None, validation_alias=AliasChoices("routing_policy", "policy")
    )
    #: start the next candidate when the running one has not answered after a delay
    hedge: StrictBool | None = None
    hedge_delay_s: float | None = Field(None, ge=0, le=600)
    #: after a refusal, try the other candidates too (default: the routing setting)
    fallback_on_refusal: StrictBool | None = None
    #: when every candidate fails, attach the default (placeholder) image to the FAILED job
    fallback_image: StrictBool | None = None
    metadata: BoundedJson = Field(default_factory=dict)
    webhook_url: str | None = Field(None, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)
    options: BoundedJson = Field(default_factory=dict)
    #: edit / variation input by URL, and an optional mask (fetched safely by the worker)
    image_url: str | None = Field(None, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)
    mask_url: str | None = Field(None, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)
    #: uploaded inputs, stored before admission (``inputs/<account id>/…``; upload routes)
    input_image_key: str | None = Field(None, pattern=INPUT_KEY_PATTERN)
    input_mask_key: str | None = Field(None, pattern=INPUT_KEY_PATTERN)
    input_reference_key: str | None = Field(None, pattern=INPUT_KEY_PATTERN)
    #: values of the template's placeholders
    inputs: (
        dict[
            Annotated[str, Field(max_length=MAX_NAME_LENGTH)],
            Annotated[str, Field(max_length=MAX_INPUT_LENGTH)]
            | Annotated[int, Field(ge=-MAX_USD, le=MAX_USD)]
            | float,
        ]
        | None
    ) = Field(None, max_length=MAX_INPUTS)
    context: PromptContext | None = None
    #: reuse an identical earlier result (needs a fixed ``seed``); None: the account default
    cache: StrictBool | None = None
    entities: list[EntityRef] | None = Field(None, max_length=MAX_ENTITIES)
    #: previews wanted while the provider works (``partial_image`` events); only providers
    #: that stream them send any (OpenAI GPT image, one image per request)
    partial_images: StrictInt | None = Field(None, ge=0, le=MAX_PARTIAL_IMAGES)

    @field_validator("prompt")
    @classmethod
    def _require_prompt(cls, value: str, info: ValidationInfo) -> str:
        # a template supplies the prompt at admission
        if not value and not info.data.get("template"):
            raise PydanticCustomError("missing", "Field required")
        return value

    @field_validator("format", mode="before")
    @classmethod
    def _normalise_format(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower()
            return "jpeg" if value == "jpg" else value
        return value

    @field_validator("reference_image_url", "webhook_url", "image_url", "mask_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_url_syntax(value, what="URL")
        except UnsafeURL as exc:
            raise ValueError(exc.message.removeprefix("URL: ")) from None

    @model_validator(mode="after")
    def _check_pairs(self) -> GenerationRequest:
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise ValueError(f"{missing} is required together with the other dimension")
        if self.provider and self.providers:
            raise ValueError("give provider or providers, not both")
        if self.image_url and self.input_image_key:
            raise ValueError("give image_url or an uploaded image, not both")
        if self.mask_url and self.input_mask_key:
            raise ValueError("give mask_url or an uploaded mask, not both")
        if self.has_mask() and not self.has_input_image():
            raise ValueError("a mask needs an input image (image_url or an upload)")
        if self.reference_image_url and self.input_reference_key:
            raise ValueError("give reference_image_url or an uploaded reference, not both")
        return self

    def has_input_image(self) -> bool:
        """An image to edit (or vary) was given, by URL or upload."""
        return bool(self.image_url or self.input_image_key)

    def has_mask(self) -> bool:
        return bool(self.mask_url or self.input_mask_key)

    def has_reference_image(self) -> bool:
        return bool(self.reference_image_url or self.input_reference_key)

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
    #: pending | approved | rejected
    approval: str = "pending"


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
    #: the generation whose images this one reuses (dedup cache), or waits for
    cached_from: str | None = None
    batch_id: str | None = None

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
    credit_policy: str = "refund"
    daily_budget_usd: Decimal | None = None
    email: str | None = None
    webhook_url: str | None = None
    disabled: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
