"""OpenRouter adapter: image-output models through two routes.

* ``chat``: ``POST /chat/completions`` with ``modalities``; images come back as ``data:``
  URLs in ``choices[0].message.images[].image_url.url``. A reply without images is a
  refusal (the model answered in words).
* ``images``: the newer ``POST /images``; images are ``data[].b64_json``.

Which model takes which route is configurable (``routes``, ``default_route``). Both
answers carry ``usage.cost`` (USD), used as the result's cost. Every call is synchronous
and unbilled when it fails, so there is nothing to cancel. Wire protocol: PROVIDERS-2.md §6.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ValidationError

from pixelgate.providers._http import error_for_status, request
from pixelgate.providers._shapes import nearest_aspect_ratio
from pixelgate.providers.base import (
    Capabilities,
    Health,
    InvalidRequest,
    JobContext,
    ModelInfo,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderImage,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
    ProviderTimeout,
    Refused,
    Transient,
)

__all__ = ["OpenRouterProvider", "OpenRouterSettings"]

Route = Literal["chat", "images"]
HEALTH_TIMEOUT_S = 5.0
MAX_IMAGES = 10
#: ``image_config.aspect_ratio`` values the chat route documents (Gemini)
CHAT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_FORMATS = ("png", "jpeg", "webp")


@dataclass(frozen=True)
class _Model:
    price_usd: Decimal
    description: str
    #: what the chat route's ``modalities`` must say (text+image models vs image-only)
    modalities: tuple[str, ...] = ("image", "text")
    #: images per call on the images route (single-image providers reject n>1)
    max_n: int = 1


# Prices per image: dated hints (OpenRouter publishes them per endpoint in
# /images/models/.../endpoints). Gemini: Google's per-image rates; seedream-4.5: the
# docs' example ($0.05); gpt-image-1: OpenAI's high-quality 1024² rate as an upper bound.
MODELS: dict[str, _Model] = {
    "google/gemini-2.5-flash-image": _Model(Decimal("0.039"), "Gemini 2.5 Flash Image"),
    "google/gemini-3-pro-image-preview": _Model(Decimal("0.134"), "Gemini 3 Pro Image"),
    "black-forest-labs/flux.2-pro": _Model(Decimal("0.03"), "FLUX.2 [pro]", ("image",)),
    "bytedance-seed/seedream-4.5": _Model(Decimal("0.05"), "Seedream 4.5", ("image",)),
    "openai/gpt-image-1": _Model(Decimal("0.167"), "GPT Image 1", ("image",), MAX_IMAGES),
}


class OpenRouterSettings(ProviderSettings):
    """Settings of a ``kind = "openrouter"`` instance."""

    kind: str = "openrouter"
    #: the route of models not named in ``routes``
    default_route: Route = "chat"
    #: model -> route, e.g. ``{"openai/gpt-image-1" = "images"}``
    routes: dict[str, Route] = {}
    #: more model slugs offered, with their USD price per image
    extra_models: dict[str, Decimal] = {}
    #: OpenRouter's optional app attribution headers
    referer: str | None = None
    title: str | None = None


class _ImageURL(BaseModel):
    url: str


class _ChatImage(BaseModel):
    image_url: _ImageURL


class _Message(BaseModel):
    content: str | None = None
    images: list[_ChatImage] | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None


class _Usage(BaseModel):
    cost: Decimal | None = None


class _ChatResponse(BaseModel):
    id: str | None = None
    choices: list[_Choice] = []
    usage: _Usage | None = None


class _ImageItem(BaseModel):
    b64_json: str
    media_type: str | None = None


class _ImagesResponse(BaseModel):
    data: list[_ImageItem] = []
    usage: _Usage | None = None


class _ErrorMetadata(BaseModel):
    reasons: list[str] | None = None
    provider_name: str | None = None


class _ErrorBody(BaseModel):
    code: int | str | None = None
    message: str | None = None
    metadata: _ErrorMetadata | None = None


class _ErrorEnvelope(BaseModel):
    error: _ErrorBody


class OpenRouterProvider(Provider):
    """Image models reached through OpenRouter (Gemini, FLUX, Seedream, GPT Image...)."""

    kind: ClassVar[str] = "openrouter"
    settings_class: ClassVar[type[ProviderSettings]] = OpenRouterSettings
    key_env: ClassVar[str | None] = "OPENROUTER_API_KEY"
    default_base_url: ClassVar[str | None] = "https://openrouter.ai/api/v1"

    settings: OpenRouterSettings

    @property
    def models(self) -> dict[str, ModelInfo]:
        specs = dict(MODELS)
        for name, price in self.settings.extra_models.items():
            specs.setdefault(name, _Model(price, f"{name} (configured)"))
        return {name: self._info(name, spec) for name, spec in specs.items()}

    def route(self, model: str) -> Route:
        """The route ``model`` takes."""
        return self.settings.routes.get(model, self.settings.default_route)

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model = request.model or self.default_model
        info = self.model_info(model)
        if request.n > info.capabilities.max_n:
            raise InvalidRequest(
                f"{self.name}: {model} makes at most {info.capabilities.max_n} image(s) per call",
                provider=self.name,
            )
        route = self.route(model)
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                if route == "chat":
                    response = await self._call(
                        "POST", "/chat/completions", json=self._chat(model, request)
                    )
                else:
                    response = await self._call(
                        "POST", "/images", json=self._images(model, request)
                    )
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no answer within {self.settings.timeout_s:g} s", provider=self.name
            ) from None
        except ProviderError as exc:
            self._scrub(exc)
            raise
        if route == "chat":
            images, usage, job = self._chat_images(response)
        else:
            images, usage, job = self._images_result(response)
        cost = usage.cost if usage is not None and usage.cost is not None else None
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=cost if cost is not None else info.price_usd * len(images),
            provider_job_id=job,
            metadata={"route": route},
        )

    async def health(self) -> Health:
        """``GET /key``: the key's own record; 401 means a bad key."""
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        started = time.monotonic()
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                await self._call("GET", "/key")
        except ProviderAuthError as exc:
            return Health(healthy=False, status="auth_failed", detail=exc.message)
        except (TimeoutError, ProviderError) as exc:
            return Health(healthy=False, status="unreachable", detail=str(exc)[:200])
        return Health(healthy=True, latency_ms=(time.monotonic() - started) * 1000)

    # -- request bodies ------------------------------------------------------------

    def _chat(self, model: str, request: ProviderRequest) -> dict[str, Any]:
        spec = MODELS.get(model) or _Model(Decimal("0"), "")
        content: str | list[dict[str, Any]] = request.prompt
        source = request.edit_image or request.reference_image
        if source is not None:
            content = [
                {"type": "text", "text": request.prompt},
                {"type": "image_url", "image_url": {"url": _data_url(source)}},
            ]
        ratio = nearest_aspect_ratio(
            CHAT_RATIOS, request.width, request.height, request.aspect_ratio
        )
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "modalities": list(spec.modalities),
            "image_config": {"aspect_ratio": ratio, "image_size": _tier(request)},
        }
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    def _images(self, model: str, request: ProviderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "prompt": request.prompt,
            "n": request.n,
            "resolution": _tier(request),
            "aspect_ratio": request.aspect_ratio or _reduced(request.width, request.height),
            "output_format": request.format if request.format in _FORMATS else "png",
        }
        quality = (request.quality or "").lower()
        if quality in ("auto", "low", "medium", "high"):
            body["quality"] = quality
        if request.seed is not None:
            body["seed"] = request.seed
        if request.background in ("transparent", "opaque", "auto"):
            body["background"] = request.background
        sources = [b for b in (request.edit_image, request.reference_image) if b is not None]
        if sources:
            body["input_references"] = [
                {"type": "image_url", "image_url": {"url": _data_url(s)}} for s in sources
            ]
        return body

    # -- calls and answers ---------------------------------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key()}"}
        if self.settings.referer:
            headers["HTTP-Referer"] = self.settings.referer
        if self.settings.title:
            headers["X-Title"] = self.settings.title
        response = await request(
            self.http, self.name, method, self.base_url + path, headers=headers, **kwargs
        )
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            error: _ErrorBody | None = _ErrorEnvelope.model_validate_json(response.content).error
        except ValidationError:
            error = None
        detail = (error.message if error is not None else None) or response.reason_phrase
        message = f"{self.name}: HTTP {status}: {detail[:500]}"
        if status == 403 and error is not None and error.metadata and error.metadata.reasons:
            reasons = ", ".join(error.metadata.reasons)
            return Refused(f"{message} ({reasons})", provider=self.name, status_code=status)
        if status == 402:
            # out of credits: waiting will not help, so take this provider out of the route
            return ProviderAuthError(message, provider=self.name, status_code=status)
        base = error_for_status(self.name, response)
        return type(base)(
            message, provider=self.name, retry_after=base.retry_after, status_code=status
        )

    def _chat_images(
        self, response: httpx.Response
    ) -> tuple[list[ProviderImage], _Usage | None, str | None]:
        try:
            body = _ChatResponse.model_validate_json(response.content)
        except ValidationError:
            raise Transient(f"{self.name}: malformed response body", provider=self.name) from None
        if not body.choices:
            raise Transient(f"{self.name}: response has no choices", provider=self.name)
        message = body.choices[0].message
        if not message.images:
            said = (message.content or body.choices[0].finish_reason or "no image")[:300]
            raise Refused(f"{self.name}: the model returned no image: {said}", provider=self.name)
        images = [self._from_data_url(item.image_url.url) for item in message.images]
        return images, body.usage, body.id

    def _images_result(
        self, response: httpx.Response
    ) -> tuple[list[ProviderImage], _Usage | None, str | None]:
        try:
            body = _ImagesResponse.model_validate_json(response.content)
        except ValidationError:
            raise Transient(f"{self.name}: malformed response body", provider=self.name) from None
        if not body.data:
            raise Transient(f"{self.name}: response has no images", provider=self.name)
        images = [
            ProviderImage(data=self._decode(item.b64_json), content_type=item.media_type)
            for item in body.data
        ]
        return images, body.usage, None

    def _from_data_url(self, url: str) -> ProviderImage:
        head, sep, payload = url.partition(",")
        if not (sep and head.startswith("data:") and head.endswith(";base64")):
            # not documented, but a plain link would still be an image to fetch
            if url.startswith("https://"):
                return ProviderImage(url=url)
            raise Transient(f"{self.name}: image is not a data URL", provider=self.name)
        return ProviderImage(
            data=self._decode(payload), content_type=head.removeprefix("data:").split(";")[0]
        )

    def _decode(self, data: str) -> bytes:
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise Transient(f"{self.name}: image is not valid base64", provider=self.name) from None
        if not raw:
            raise Transient(f"{self.name}: empty image", provider=self.name)
        return raw

    def _info(self, name: str, spec: _Model) -> ModelInfo:
        images_route = self.route(name) == "images"
        caps = Capabilities(
            edit=True,
            reference_image=True,
            seed=True,
            transparency=images_route,
            aspect_ratios=() if images_route else CHAT_RATIOS,
            max_n=spec.max_n if images_route else 1,
            output_formats=_FORMATS if images_route else ("png",),
        )
        return ModelInfo(name, caps, spec.price_usd, spec.description)


def _tier(request: ProviderRequest) -> str:
    side = max(request.width, request.height)
    return "1K" if side <= 1024 else "2K" if side <= 2048 else "4K"


def _reduced(width: int, height: int) -> str:
    d = math.gcd(width, height) or 1
    return f"{width // d}:{height // d}"


def _data_url(data: bytes) -> str:
    kind = (
        "png" if data.startswith(b"\x89PNG") else "jpeg" if data.startswith(b"\xff\xd8") else "webp"
    )
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"
