"""Unsplash adapter: a stock photo matching the prompt, as a free fallback.

Wire protocol: PROVIDERS.md §8. A photo is found by search (default) or at random;
its ``urls.raw`` imgix link gets ``w``/``h``/``fit=crop``/``fm`` so the size matches
the request. Unsplash's guidelines are honoured: the photo is hotlinked (returned
as a URL, not re-hosted by this adapter), the attribution travels on
``ProviderImage.attribution``, and the download-tracking endpoint is called (best
effort: its failure never fails the job).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import structlog
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from pixelgate.providers._http import error_for_status, parse, request
from pixelgate.providers.base import (
    Capabilities,
    InvalidRequest,
    JobContext,
    ModelInfo,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderImage,
    ProviderRateLimited,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
)

__all__ = ["UnsplashProvider", "UnsplashSettings"]

log = structlog.get_logger(__name__)

MAX_PER_PAGE = 30
TRACK_TIMEOUT_S = 5.0
HOUR_S = 3600
#: width/height ratio beyond which a photo is landscape or portrait rather than squarish
SQUARISH_TOLERANCE = 1.2
IMGIX_FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class UnsplashSettings(ProviderSettings):
    """Settings of a ``kind = "unsplash"`` instance."""

    kind: str = "unsplash"
    mode: Literal["search", "random"] = "search"
    #: ``utm_source`` of attribution links (the app name registered with Unsplash)
    app_name: str = "pixelgate"
    content_filter: Literal["low", "high"] = "high"
    #: how many search results to choose from (the seed picks among them)
    per_page: int = Field(default=10, ge=1, le=MAX_PER_PAGE)
    #: imgix ``q`` for lossy formats; None leaves imgix's default
    quality: int | None = Field(default=None, ge=1, le=100)


class _Urls(BaseModel):
    raw: str


class _Links(BaseModel):
    html: str
    download_location: str | None = None


class _UserLinks(BaseModel):
    html: str


class _User(BaseModel):
    name: str
    username: str | None = None
    links: _UserLinks


class _Photo(BaseModel):
    id: str
    urls: _Urls
    links: _Links
    user: _User
    description: str | None = None
    alt_description: str | None = None
    color: str | None = None
    blur_hash: str | None = None


class _Search(BaseModel):
    total: int = 0
    results: list[_Photo] = Field(default_factory=list)


class _Errors(BaseModel):
    errors: list[str] = Field(default_factory=list)


_RANDOM: TypeAdapter[list[_Photo] | _Photo] = TypeAdapter(list[_Photo] | _Photo)
_SEARCH = TypeAdapter(_Search)
T = TypeVar("T")


class UnsplashProvider(Provider):
    """Unsplash stock photos, cropped by imgix to the requested size; free."""

    kind = "unsplash"
    settings_class = UnsplashSettings
    key_env = "UNSPLASH_ACCESS_KEY"
    default_base_url = "https://api.unsplash.com"

    settings: UnsplashSettings

    @property
    def models(self) -> dict[str, ModelInfo]:
        caps = Capabilities(
            max_n=MAX_PER_PAGE,
            output_formats=("png", "jpeg", "webp"),
            max_width=8192,
            max_height=8192,
        )
        # Unsplash API use is free (rate limited per hour).
        return {"unsplash": ModelInfo("unsplash", caps, Decimal("0"), "Unsplash stock photo")}

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        query = str(request.options.get("query") or request.prompt).strip()
        if not query:
            raise InvalidRequest(f"{self.name}: empty query", provider=self.name)
        photos = await self._run_job(lambda: self._find(query, request))
        if not photos:
            raise InvalidRequest(f"{self.name}: no stock photo matches", provider=self.name)
        await asyncio.gather(*(self._track(photo) for photo in photos))
        images = [self._image(photo, request) for photo in photos]
        return ProviderResult(
            images=images,
            model="unsplash",
            cost_usd=Decimal("0"),
            metadata={"query": query, "photo_ids": [p.id for p in photos]},
        )

    # -- internals -----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Client-ID {self.api_key()}", "Accept-Version": "v1"}

    async def _find(self, query: str, request: ProviderRequest) -> list[_Photo]:
        params: dict[str, Any] = {
            "query": query,
            "orientation": _orientation(request.width, request.height),
            "content_filter": self.settings.content_filter,
        }
        if self.settings.mode == "random":
            params["count"] = min(request.n, MAX_PER_PAGE)
            response = await self._call(f"{self.base_url}/photos/random", params=params)
            found = self._parse(_RANDOM, response)
            return (found if isinstance(found, list) else [found])[: request.n]
        params["per_page"] = min(MAX_PER_PAGE, max(request.n, self.settings.per_page))
        response = await self._call(f"{self.base_url}/search/photos", params=params)
        results = self._parse(_SEARCH, response).results
        if not results:
            return []
        # The seed picks where in the result list to start, so reruns can vary.
        start = (request.seed or 0) % len(results)
        ordered = results[start:] + results[:start]
        return ordered[: request.n]

    def _image(self, photo: _Photo, request: ProviderRequest) -> ProviderImage:
        params = {
            "w": str(request.width),
            "h": str(request.height),
            "fit": "crop",
            "fm": IMGIX_FORMATS.get(request.format, "jpg"),
        }
        if self.settings.quality is not None and request.format != "png":
            params["q"] = str(self.settings.quality)
        return ProviderImage(
            url=_with_params(photo.urls.raw, params),
            content_type=CONTENT_TYPES.get(request.format, "image/jpeg"),
            attribution=self._attribution(photo),
        )

    def _attribution(self, photo: _Photo) -> dict[str, Any]:
        utm = {"utm_source": self.settings.app_name, "utm_medium": "referral"}
        return {
            "source": "unsplash",
            "photo_id": photo.id,
            "photographer": photo.user.name,
            "photographer_username": photo.user.username,
            "photographer_url": _with_params(photo.user.links.html, utm),
            "photo_url": _with_params(photo.links.html, utm),
            "unsplash_url": _with_params("https://unsplash.com/", utm),
            "text": f"Photo by {photo.user.name} on Unsplash",
            "description": photo.alt_description or photo.description,
        }

    async def _track(self, photo: _Photo) -> None:
        """Hit ``links.download_location`` as the API guidelines require; never fails the job."""
        url = photo.links.download_location or f"{self.base_url}/photos/{photo.id}/download"
        # The access key goes only to the API host, whatever the response said.
        if urlsplit(url).netloc != urlsplit(self.base_url).netloc:
            url = f"{self.base_url}/photos/{photo.id}/download"
        try:
            async with asyncio.timeout(TRACK_TIMEOUT_S):
                await self._call(url)
        except (ProviderError, TimeoutError) as exc:
            log.warning(
                "unsplash_download_tracking_failed",
                provider=self.name,
                photo_id=photo.id,
                error=type(exc).__name__,
            )

    async def _call(self, url: str, **kwargs: Any) -> httpx.Response:
        response = await request(
            self.http, self.name, "GET", url, headers=self._headers(), **kwargs
        )
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            detail = "; ".join(_Errors.model_validate_json(response.content).errors)
        except ValidationError:
            detail = response.text[:200]
        message = f"{self.name}: HTTP {status}: {detail[:500] or response.reason_phrase}"
        remaining = response.headers.get("x-ratelimit-remaining")
        if status == 429 or (
            status == 403 and ("rate limit" in detail.lower() or remaining == "0")
        ):
            # No Retry-After: the hourly window resets at the top of the hour.
            retry_after = HOUR_S - time.time() % HOUR_S
            return ProviderRateLimited(
                message, provider=self.name, retry_after=retry_after, status_code=status
            )
        if status in (401, 403):
            return ProviderAuthError(message, provider=self.name, status_code=status)
        if status == 404:
            return InvalidRequest(
                f"{self.name}: no stock photo matches", provider=self.name, status_code=404
            )
        if 400 <= status < 500:
            return InvalidRequest(message, provider=self.name, status_code=status)
        return error_for_status(self.name, response)

    def _parse(self, adapter: TypeAdapter[T], response: httpx.Response) -> T:
        return parse(self.name, adapter, response)


def _orientation(width: int, height: int) -> str:
    ratio = width / height
    if ratio >= SQUARISH_TOLERANCE:
        return "landscape"
    if ratio <= 1 / SQUARISH_TOLERANCE:
        return "portrait"
    return "squarish"


def _with_params(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
