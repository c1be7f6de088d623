"""Recraft adapter: ``POST /v1/images/generations``, raster and vector (SVG) models.

OpenAI-like JSON with Recraft's ``style``/``substyle`` (``style = "vector_illustration/
line_art"`` sets both), ``negative_prompt`` and ``random_seed``. ``*_vector`` models
answer SVG: it is returned as is (``image/svg+xml``) and the pipeline sanitises it and
keeps it as SVG, rasterising only when the request asks for PNG/WebP. Errors are plain
text or JSON; every answer says the API units it used (``credits``, 1 000 = $1), which
is the cost. Calls are synchronous, so there is nothing to cancel.
Wire protocol: PROVIDERS-2.md §5.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ValidationError

from pixelgate.providers._http import error_for_status, request
from pixelgate.providers._openai_models import nearest_size
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

__all__ = ["RecraftProvider", "RecraftSettings"]

HEALTH_TIMEOUT_S = 5.0
#: V3 docs: 1-6 images per request (the current maximum is unconfirmed)
MAX_IMAGES = 6
USD_PER_UNIT = Decimal("0.001")
SVG = "image/svg+xml"
_SAFETY = re.compile(r"nsfw|safety|moderat|inappropriate|prohibited|content polic", re.I)

#: V2/V3 sizes (Recraft's appendix)
V3_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024), (1365, 1024), (1024, 1365), (1536, 1024), (1024, 1536), (1820, 1024),
    (1024, 1820), (1024, 2048), (2048, 1024), (1434, 1024), (1024, 1434), (1024, 1280),
    (1280, 1024), (1024, 1707), (1707, 1024),
)  # fmt: skip
#: V4 takes ``size`` as a ratio (about 1 MP each)
V4_RATIOS = ("1:1", "2:1", "1:2", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5", "16:9", "9:16")
RASTER_STYLES = frozenset({"any", "digital_illustration", "realistic_image", "logo_raster"})
VECTOR_STYLES = frozenset({"any", "vector_illustration", "icon"})


@dataclass(frozen=True)
class _Model:
    vector: bool
    price_usd: Decimal
    description: str
    v4: bool = False


# Prices per image, recraft.ai pricing page (PROVIDERS-2.md §5): V3 raster $0.04 / vector
# $0.08, V2 $0.022 / $0.044, V4.1 $0.035 (V4.1 vector price not published there).
MODELS: dict[str, _Model] = {
    "recraftv3": _Model(False, Decimal("0.04"), "Recraft V3 raster"),
    "recraftv3_vector": _Model(True, Decimal("0.08"), "Recraft V3 vector (SVG)"),
    "recraftv2": _Model(False, Decimal("0.022"), "Recraft V2 raster"),
    "recraftv2_vector": _Model(True, Decimal("0.044"), "Recraft V2 vector (SVG)"),
    "recraftv4_1": _Model(False, Decimal("0.035"), "Recraft V4.1 raster", v4=True),
}


class RecraftSettings(ProviderSettings):
    """Settings of a ``kind = "recraft"`` instance."""

    kind: str = "recraft"
    #: ``b64_json`` keeps the image in the answer; ``url`` links last about a day
    response_format: Literal["b64_json", "url"] = "b64_json"
    #: ask Recraft to block NSFW output (a refusal instead of an image)
    block_nsfw: bool | None = None


class _Image(BaseModel):
    image_id: str | None = None
    url: str | None = None
    b64_json: str | None = None


class _Response(BaseModel):
    credits: int | None = None
    data: list[_Image] = []


class RecraftProvider(Provider):
    """Recraft V2/V3/V4.1: raster images, and SVG from the ``*_vector`` models."""

    kind: ClassVar[str] = "recraft"
    settings_class: ClassVar[type[ProviderSettings]] = RecraftSettings
    key_env: ClassVar[str | None] = "RECRAFT_API_TOKEN"
    default_base_url: ClassVar[str | None] = "https://external.api.recraft.ai/v1"

    settings: RecraftSettings

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {name: _info(name, spec) for name, spec in MODELS.items()}

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model = request.model or self.default_model
        self.model_info(model)
        spec = MODELS[model]
        body = self._body(model, spec, request)
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                response = await self._call("POST", "/images/generations", json=body)
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no answer within {self.settings.timeout_s:g} s", provider=self.name
            ) from None
        except ProviderError as exc:
            self._scrub(exc)
            raise
        return self._result(model, spec, request, response)

    async def health(self) -> Health:
        """``GET /users/me``: the account, with its remaining units."""
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        started = time.monotonic()
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                await self._call("GET", "/users/me")
        except ProviderAuthError as exc:
            return Health(healthy=False, status="auth_failed", detail=exc.message)
        except (TimeoutError, ProviderError) as exc:
            return Health(healthy=False, status="unreachable", detail=str(exc)[:200])
        return Health(healthy=True, latency_ms=(time.monotonic() - started) * 1000)

    # -- internals -----------------------------------------------------------------

    def _body(self, model: str, spec: _Model, request: ProviderRequest) -> dict[str, Any]:
        if not 1 <= request.n <= MAX_IMAGES:
            raise InvalidRequest(f"{self.name}: n must be 1 to {MAX_IMAGES}", provider=self.name)
        if request.format == "svg" and not spec.vector:
            raise InvalidRequest(
                f"{self.name}: {model} makes raster images; SVG needs a *_vector model",
                provider=self.name,
            )
        style, _, substyle = (request.style or "").partition("/")
        substyle = str(request.options.get("substyle") or substyle)
        allowed = VECTOR_STYLES if spec.vector else RASTER_STYLES
        if style and (spec.v4 or style not in allowed):
            hint = "V4 takes no styles" if spec.v4 else f"use one of {', '.join(sorted(allowed))}"
            raise InvalidRequest(
                f"{self.name}: style {style!r} does not fit {model} ({hint})", provider=self.name
            )
        if spec.v4:
            ratio = nearest_aspect_ratio(
                V4_RATIOS, request.width, request.height, request.aspect_ratio
            )
            size = ratio
        else:
            w, h = nearest_size(V3_SIZES, request.width, request.height, request.aspect_ratio)
            size = f"{w}x{h}"
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "model": model,
            "n": request.n,
            "size": size,
            "response_format": self.settings.response_format,
        }
        optional: dict[str, Any] = {
            "style": style or None,
            "substyle": substyle or None,
            "style_id": request.options.get("style_id"),
            "negative_prompt": request.negative_prompt,
            "random_seed": request.seed,
            "controls": request.options.get("controls"),
            "block_nsfw": self.settings.block_nsfw,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
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
        # Recraft answers in plain text or JSON: read the text first (its error page)
        status = response.status_code
        text = response.text[:500].strip() or response.reason_phrase
        if status in (400, 422) and _SAFETY.search(text):
            return Refused(
                f"{self.name}: HTTP {status}: {text}", provider=self.name, status_code=status
            )
        base = error_for_status(self.name, response)
        return type(base)(
            f"{self.name}: HTTP {status}: {text}",
            provider=self.name,
            retry_after=base.retry_after,
            status_code=status,
        )

    def _result(
        self, model: str, spec: _Model, request: ProviderRequest, response: httpx.Response
    ) -> ProviderResult:
        try:
            body = _Response.model_validate_json(response.content)
        except ValidationError:
            raise Transient(f"{self.name}: malformed response body", provider=self.name) from None
        if not body.data:
            raise Transient(f"{self.name}: response has no images", provider=self.name)
        content_type = SVG if spec.vector else None
        images: list[ProviderImage] = []
        for item in body.data:
            if item.b64_json:
                try:
                    data = base64.b64decode(item.b64_json, validate=True)
                except (binascii.Error, ValueError):
                    raise Transient(
                        f"{self.name}: image is not valid base64", provider=self.name
                    ) from None
                images.append(ProviderImage(data=data, content_type=content_type))
            elif item.url:
                images.append(ProviderImage(url=item.url, content_type=content_type))
            else:
                raise Transient(f"{self.name}: image without data or url", provider=self.name)
        cost = (
            USD_PER_UNIT * body.credits
            if body.credits is not None
            else spec.price_usd * len(images)
        )
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=cost,
            metadata={
                "credits": body.credits,
                "image_ids": [item.image_id for item in body.data],
                "vector": spec.vector,
            },
        )


def _info(name: str, spec: _Model) -> ModelInfo:
    caps = Capabilities(
        negative_prompt=True,
        seed=True,
        sizes=() if spec.v4 else V3_SIZES,
        aspect_ratios=V4_RATIOS if spec.v4 else (),
        max_n=MAX_IMAGES,
        output_formats=("svg",) if spec.vector else ("png", "webp"),
        max_width=2048,
        max_height=2048,
    )
    return ModelInfo(name, caps, spec.price_usd, spec.description)
