"""xAI (Grok Imagine) images API adapter: ``/v1/images/generations`` and ``/v1/images/edits``.

OpenAI-like, but sizes are an ``aspect_ratio`` and a ``resolution`` (``1k``/``2k``), edits
are JSON with the image as a data URL, and the fields xAI refuses (``size``, ``style``,
transparency, OpenAI's output options) are refused here as invalid requests before any
call. The API is synchronous (its ``deferred`` mode is not used), so there is nothing to
cancel. Wire protocol: PROVIDERS-2.md §7.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
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

__all__ = ["XAIProvider", "XAISettings"]

MAX_IMAGES = 10
HEALTH_TIMEOUT_S = 5.0
#: one ``cost_in_usd_ticks`` is 1e-10 USD
USD_PER_TICK = Decimal("1e-10")
RATIOS = (
    "1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "9:19.5", "19.5:9", "9:20", "20:9",
    "1:2", "2:1", "21:9", "5:2",
)  # fmt: skip
#: the longest side above which ``2k`` is asked for
ONE_K = 1024
#: OpenAI request options xAI answers with 400 ("Argument not supported")
REFUSED_OPTIONS = ("size", "style", "output_format", "output_compression", "background")
_SAFETY = re.compile(r"safety|moderat|content polic|usage guideline|violat", re.IGNORECASE)


class _Model(BaseModel):
    price_usd: Decimal
    description: str
    quality: bool = False


# Prices per output image, PROVIDERS-2.md §7 (docs: grok-imagine-image $0.02; 2.0 is
# $0.04-0.08 by quality, *observed*; grok-2-image $0.07, *observed*).
MODELS: dict[str, _Model] = {
    "grok-imagine-image": _Model(price_usd=Decimal("0.02"), description="Grok Imagine"),
    "grok-imagine-image-2.0": _Model(
        price_usd=Decimal("0.08"), description="Grok Imagine 2.0 (quality low/medium)", quality=True
    ),
    "grok-2-image": _Model(price_usd=Decimal("0.07"), description="Grok 2 Image (JPEG)"),
}
_QUALITY_PRICE = {"low": Decimal("0.04"), "medium": Decimal("0.08")}


class XAISettings(ProviderSettings):
    """Settings of a ``kind = "xai"`` instance."""

    kind: str = "xai"
    #: ``b64_json`` keeps the image in the answer; ``url`` links are temporary
    response_format: Literal["b64_json", "url"] = "b64_json"


class _Image(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    mime_type: str | None = None
    revised_prompt: str | None = None


class _Usage(BaseModel):
    cost_in_usd_ticks: int | None = None


class _Response(BaseModel):
    data: list[_Image] = []
    usage: _Usage | None = None
    block_reason: str | None = None


class _Error(BaseModel):
    code: str | None = None
    error: str | None = None


class XAIProvider(Provider):
    """xAI's Grok Imagine models: generate (up to 10) and edit one image."""

    kind: ClassVar[str] = "xai"
    settings_class: ClassVar[type[ProviderSettings]] = XAISettings
    key_env: ClassVar[str | None] = "XAI_API_KEY"
    default_base_url: ClassVar[str | None] = "https://api.x.ai/v1"

    settings: XAISettings

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {name: _info(name, spec) for name, spec in MODELS.items()}

    def price(self, request: ProviderRequest) -> Decimal:
        model = request.model or self.default_model
        spec = self.model_info(model)
        quality = (request.quality or "").lower()
        if MODELS[model].quality and quality in _QUALITY_PRICE:
            return _QUALITY_PRICE[quality] * request.n
        return spec.price_usd * request.n

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model = request.model or self.default_model
        self.model_info(model)
        body = self._body(model, request)
        path = "/images/edits" if "image" in body else "/images/generations"
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                response = await self._call("POST", path, json=body)
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no answer within {self.settings.timeout_s:g} s", provider=self.name
            ) from None
        except ProviderError as exc:
            self._scrub(exc)
            raise
        return self._result(model, request, response)

    async def health(self) -> Health:
        """``GET /models``: 2xx is healthy, 401/403 is a bad key."""
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                response = await self._call("GET", "/models")
        except (TimeoutError, ProviderError) as exc:
            status = "auth_failed" if isinstance(exc, ProviderAuthError) else "unreachable"
            return Health(healthy=False, status=status, detail=str(exc)[:200])
        return Health(healthy=response.is_success)

    # -- internals -----------------------------------------------------------------

    def _body(self, model: str, request: ProviderRequest) -> dict[str, Any]:
        refused = [k for k in REFUSED_OPTIONS if k in request.options]
        if request.style:
            refused.insert(0, "style")
        if request.background == "transparent":
            refused.append("background")
        if refused:
            raise InvalidRequest(
                f"{self.name}: xAI does not support {', '.join(dict.fromkeys(refused))}",
                provider=self.name,
            )
        if not 1 <= request.n <= MAX_IMAGES:
            raise InvalidRequest(f"{self.name}: n must be 1 to {MAX_IMAGES}", provider=self.name)
        body: dict[str, Any] = {
            "model": model,
            "prompt": request.prompt,
            "n": request.n,
            "response_format": self.settings.response_format,
        }
        source = request.edit_image or request.reference_image
        if source is not None:
            # a single-image edit keeps the input's aspect ratio: no ratio is sent
            body["image"] = {"url": _data_url(source), "type": "image_url"}
        else:
            body["aspect_ratio"] = nearest_aspect_ratio(
                RATIOS, request.width, request.height, request.aspect_ratio
            )
            body["resolution"] = "2k" if max(request.width, request.height) > ONE_K else "1k"
        quality = (request.quality or "").lower()
        if MODELS[model].quality and quality in ("low", "medium", "high"):
            body["quality"] = quality
        return body

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key()}"}
        response = await request(
            self.http, self.name, method, self.base_url + path, headers=headers, **kwargs
        )
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            detail = _Error.model_validate_json(response.content).error
        except ValidationError:
            detail = None
        if detail and status in (400, 422):
            message = f"{self.name}: HTTP {status}: {detail[:500]}"
            if _SAFETY.search(detail):
                return Refused(message, provider=self.name, status_code=status)
            if "api key" in detail.lower():  # xAI answers a bad key with 400
                return ProviderAuthError(message, provider=self.name, status_code=status)
            return InvalidRequest(message, provider=self.name, status_code=status)
        return error_for_status(self.name, response)

    def _result(
        self, model: str, request: ProviderRequest, response: httpx.Response
    ) -> ProviderResult:
        try:
            body = _Response.model_validate_json(response.content)
        except ValidationError:
            raise Transient(f"{self.name}: malformed response body", provider=self.name) from None
        if body.block_reason:
            raise Refused(f"{self.name}: {body.block_reason[:300]}", provider=self.name)
        if not body.data:
            raise Transient(f"{self.name}: response has no images", provider=self.name)
        images = [self._image(item) for item in body.data]
        cost = None
        if body.usage is not None and body.usage.cost_in_usd_ticks is not None:
            cost = USD_PER_TICK * body.usage.cost_in_usd_ticks
        metadata: dict[str, Any] = {}
        revised = [item.revised_prompt for item in body.data if item.revised_prompt]
        if revised:
            metadata["revised_prompt"] = revised
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=cost if cost is not None else self.price(request),
            metadata=metadata,
        )

    def _image(self, item: _Image) -> ProviderImage:
        if item.b64_json:
            # the old guide showed values with a ``data:image/...;base64,`` prefix
            raw = (
                item.b64_json.partition(",")[2]
                if item.b64_json.startswith("data:")
                else item.b64_json
            )
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise Transient(
                    f"{self.name}: image is not valid base64", provider=self.name
                ) from None
            return ProviderImage(data=data, content_type=item.mime_type or "image/jpeg")
        if item.url:
            return ProviderImage(url=item.url, content_type=item.mime_type)
        raise Transient(f"{self.name}: image without data or url", provider=self.name)


def _info(name: str, spec: _Model) -> ModelInfo:
    caps = Capabilities(
        edit=True,
        reference_image=True,
        aspect_ratios=RATIOS,
        max_n=MAX_IMAGES,
        output_formats=("jpeg",),
        max_width=2048,
        max_height=2048,
    )
    return ModelInfo(name, caps, spec.price_usd, spec.description)


def _data_url(data: bytes) -> str:
    kind = (
        "png" if data.startswith(b"\x89PNG") else "jpeg" if data.startswith(b"\xff\xd8") else "webp"
    )
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"
