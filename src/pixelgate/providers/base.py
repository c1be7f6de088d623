"""The provider interface every adapter implements.

An adapter translates one :class:`ProviderRequest` into one provider API call
(submitting and polling inside ``generate`` when the API is asynchronous) and
returns a :class:`ProviderResult`. Every failure is raised as one of the
taxonomy errors re-exported here; SDK and httpx exceptions never escape.
"""

from __future__ import annotations

import abc
import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Protocol, TypeAlias, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)

__all__ = [
    "MAX_PARTIAL_IMAGES",
    "Capabilities",
    "Health",
    "HttpClient",
    "InvalidRequest",
    "JobContext",
    "ModelInfo",
    "Provider",
    "ProviderAuthError",
    "ProviderError",
    "ProviderImage",
    "ProviderRateLimited",
    "ProviderRequest",
    "ProviderResult",
    "ProviderSettings",
    "ProviderTimeout",
    "Refused",
    "Transient",
]

T = TypeVar("T")

#: the process-wide pooled HTTP client adapters are given (core passes it on untouched)
HttpClient: TypeAlias = httpx.AsyncClient

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_POLL_INTERVAL_S = 2.0
#: preview images a request may ask for (OpenAI's ``partial_images``)
MAX_PARTIAL_IMAGES = 3


class ProviderSettings(BaseModel):
    """Settings of one named provider instance (a ``[providers.NAME]`` table).

    Adapters subclass this as ``<Provider>Settings`` to add their own fields.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    base_url: str | None = None
    default_model: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    #: polls of a long job back off up to this (default: five times ``poll_interval_s``)
    poll_max_interval_s: float | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Capabilities:
    """What a model can do. ``sizes``/``aspect_ratios`` empty means any size."""

    generate: bool = True
    edit: bool = False
    mask: bool = False
    reference_image: bool = False
    transparency: bool = False
    negative_prompt: bool = False
    seed: bool = False
    sizes: tuple[tuple[int, int], ...] = ()
    aspect_ratios: tuple[str, ...] = ()
    max_n: int = 1
    output_formats: tuple[str, ...] = ("png",)
    max_width: int = 4096
    max_height: int = 4096


@dataclass(frozen=True)
class ModelInfo:
    """One model of a provider: its capabilities and price per image in USD."""

    name: str
    capabilities: Capabilities
    price_usd: Decimal = Decimal("0")
    description: str = ""


@dataclass
class ProviderRequest:
    """What the pipeline asks a provider for; already validated and normalised."""

    prompt: str
    model: str | None = None
    negative_prompt: str | None = None
    n: int = 1
    width: int = 1024
    height: int = 1024
    aspect_ratio: str | None = None
    format: str = "png"
    quality: str | None = None
    style: str | None = None
    seed: int | None = None
    background: str | None = None
    reference_image: bytes | None = None
    edit_image: bytes | None = None
    mask: bytes | None = None
    #: previews wanted while the provider works (0-3); adapters that can stream them
    #: hand each to :meth:`JobContext.partial_image`, the others ignore it
    partial_images: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProviderImage:
    """One image from a provider: inline bytes or a URL to fetch once."""

    data: bytes | None = None
    url: str | None = None
    content_type: str | None = None
    attribution: dict[str, Any] | None = None
    seed: int | None = None


@dataclass
class ProviderResult:
    images: list[ProviderImage]
    model: str
    cost_usd: Decimal | None = None
    provider_job_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Health:
    healthy: bool
    status: str = "operational"
    detail: str | None = None
    latency_ms: float | None = None


class JobContext(Protocol):
    """What an adapter may use while it runs one job."""

    @property
    def http(self) -> httpx.AsyncClient:
        """The process-wide pooled HTTP client."""

    @property
    def provider_job_id(self) -> str | None:
        """The provider's job id saved by an earlier run of this job, if any (resume)."""

    async def save_provider_job(self, job_id: str) -> None:
        """Persist the provider's job id *before* polling, so a restart resumes it."""

    async def progress(self, percent: int, message: str | None = None) -> None:
        """Report progress (0-100); cheap to call often."""

    async def partial_image(self, index: int, data: bytes, output_format: str) -> None:
        """Hand over a preview (``partial_images``): shown to watchers, never a result.

        Args:
            index: the provider's 0-based number of the preview.
            data: the encoded image.
            output_format: ``png``, ``jpeg`` or ``webp``, as the provider says.
        """


class Provider(abc.ABC):
    """One configured provider instance (``name``) of an adapter ``kind``."""

    kind: ClassVar[str]
    settings_class: ClassVar[type[ProviderSettings]] = ProviderSettings
    #: usual environment variable of the provider's key (``OPENAI_API_KEY``...)
    key_env: ClassVar[str | None] = None
    #: the provider's public endpoint
    default_base_url: ClassVar[str | None] = None
    #: whether the adapter works without an API key
    needs_key: ClassVar[bool] = True

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        self.name = name
        self.settings = settings
        self.http = http

    @property
    @abc.abstractmethod
    def models(self) -> dict[str, ModelInfo]:
        """The models this instance offers, by name."""

    @functools.cached_property
    def model_table(self) -> dict[str, ModelInfo]:
        """:attr:`models`, built once: an instance's settings never change, and the
        lookups below are on every request's path."""
        return self.models

    def offers(self, model: str) -> bool:
        """True when ``model`` is one of :attr:`models` (cheaper where a table says it)."""
        return model in self.model_table

    @property
    def default_model(self) -> str:
        return self.settings.default_model or next(iter(self.model_table))

    @property
    def configured(self) -> bool:
        """True when the instance has what it needs (a key) and is enabled."""
        if not self.settings.enabled:
            return False
        return not self.needs_key or self.settings.api_key is not None

    @property
    def base_url(self) -> str:
        return (self.settings.base_url or self.default_base_url or "").rstrip("/")

    def api_key(self) -> str:
        if self.settings.api_key is None:
            raise ProviderAuthError(f"{self.name}: no API key configured", provider=self.name)
        return self.settings.api_key.get_secret_value()

    def model_info(self, model: str | None) -> ModelInfo:
        name = model or self.default_model
        info = self.model_table.get(name)
        if info is None:
            raise InvalidRequest(f"{self.name}: unknown model {name!r}", provider=self.name)
        return info

    def checked_model(self, request: ProviderRequest) -> tuple[str, ModelInfo]:
        """The request's model and its info, once ``n`` is within what the model makes.

        Raises:
            InvalidRequest: an unknown model, or ``n`` out of range.
        """
        model = request.model or self.default_model
        info = self.model_info(model)
        if not 1 <= request.n <= info.capabilities.max_n:
            raise InvalidRequest(
                f"{self.name}: {model} makes 1 to {info.capabilities.max_n} images per request",
                provider=self.name,
            )
        return model, info

    def price(self, request: ProviderRequest) -> Decimal:
        """Estimated USD for the request (per image price x n by default)."""
        return self.model_info(request.model).price_usd * request.n

    def _redact(self, text: str) -> str:
        """``text`` with this instance's API key blanked out."""
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else ""
        return text.replace(key, "***") if key else text

    def _scrub(self, exc: ProviderError) -> None:
        """Blank this instance's API key out of an error (some providers quote it back)."""
        redacted = self._redact(exc.message)
        if redacted != exc.message:
            exc.message = redacted
            exc.args = (exc.message,)

    async def _run_job(
        self,
        run: Callable[[], Awaitable[T]],
        job_id: Callable[[], str | None] = lambda: None,
    ) -> T:
        """Run a provider call or job within ``timeout_s``, our key scrubbed from its errors.

        Past the deadline the provider job (``job_id()``, once submitted) is cancelled at
        the provider — best effort — and ``ProviderTimeout`` raised; a plain task
        cancellation (worker shutdown) leaves it running so a restart can resume it.
        """
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                return await run()
        except TimeoutError:
            submitted = job_id()
            if submitted is not None:
                await self.cancel(submitted)
            raise ProviderTimeout(
                f"{self.name}: no result within {self.settings.timeout_s:g} s", provider=self.name
            ) from None
        except ProviderError as exc:
            self._scrub(exc)
            raise

    @abc.abstractmethod
    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        """Produce images for ``request``; raise a taxonomy error on failure."""

    async def cancel(self, provider_job_id: str) -> None:  # noqa: B027 - optional
        """Cancel a running provider job, where the API allows it."""

    async def health(self) -> Health:
        """Cheap health check; default: configured means healthy."""
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        return Health(healthy=True)
