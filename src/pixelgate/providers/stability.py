"""Stability AI Stable Image v2beta adapter (core, ultra, sd3.5).

Wire protocol: PROVIDERS.md §4. Every request is ``multipart/form-data``; the
answer is the raw image (``Accept: image/*``) with ``finish-reason`` and ``seed``
headers, or the JSON variant when a server prefers it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import BaseModel, Field, ValidationError

from pixelgate.providers import _http
from pixelgate.providers._shapes import gather_partial, nearest_aspect_ratio, sniff_image_type
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
    ProviderTimeout,
    Refused,
    Transient,
)

__all__ = ["StabilityProvider", "StabilitySettings"]

MAX_N = 4
MAX_SEED = 4_294_967_294
#: outputs are about 1 MP, so even 21:9 stays near 1536 px on its long side
MAX_SIDE = 1536
#: Stability locks a key out for 60 s after a 429 and sends no Retry-After (PROVIDERS.md §4)
LOCKOUT_S = 60.0
ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
STYLE_PRESETS = frozenset(
    {
        "3d-model",
        "analog-film",
        "anime",
        "cinematic",
        "comic-book",
        "digital-art",
        "enhance",
        "fantasy-art",
        "isometric",
        "line-art",
        "low-poly",
        "modeling-compound",
        "neon-punk",
        "origami",
        "photographic",
        "pixel-art",
        "tile-texture",
    }
)
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
T = TypeVar("T")


@dataclass(frozen=True)
class _Model:
    endpoint: str
    #: the ``model`` form field (sd3 endpoint only)
    sd3_model: str | None
    price: Decimal
    image_input: bool
    formats: tuple[str, ...]
    description: str


# USD per image = credits x $0.01, PROVIDERS.md §4 (snapshot 2026-08-21). Dated hints only.
_MODELS: dict[str, _Model] = {
    "core": _Model(
        "core", None, Decimal("0.03"), False, ("png", "jpeg", "webp"), "Stable Image Core"
    ),
    "ultra": _Model(
        "ultra", None, Decimal("0.08"), True, ("png", "jpeg", "webp"), "Stable Image Ultra"
    ),
    "sd3.5-large": _Model(
        "sd3", "sd3.5-large", Decimal("0.065"), True, ("png", "jpeg"), "Stable Diffusion 3.5 Large"
    ),
    "sd3.5-large-turbo": _Model(
        "sd3",
        "sd3.5-large-turbo",
        Decimal("0.04"),
        True,
        ("png", "jpeg"),
        "Stable Diffusion 3.5 Large Turbo",
    ),
    "sd3.5-medium": _Model(
        "sd3",
        "sd3.5-medium",
        Decimal("0.035"),
        True,
        ("png", "jpeg"),
        "Stable Diffusion 3.5 Medium",
    ),
}


class StabilitySettings(ProviderSettings):
    """Settings of a ``stability`` instance."""

    #: how far the output may move away from a reference image (0 keeps it, 1 ignores it)
    image_strength: float = Field(0.6, ge=0, le=1)
    #: sent as ``stability-client-id`` when set
    client_id: str | None = Field(None, max_length=256)


class _JSONImage(BaseModel):
    image: str
    finish_reason: str | None = None
    seed: int | None = None


class _ErrorBody(BaseModel):
    id: str | None = None
    name: str | None = None
    errors: list[str] = []


class StabilityProvider(Provider):
    """Stable Image Core / Ultra / SD3.5 at ``/v2beta/stable-image/generate/{endpoint}``.

    The API makes one image per call, so ``n`` > 1 runs ``n`` calls at once
    (``max_n`` = 4) with seeds ``seed``, ``seed + 1``...; calls that fail are
    dropped when at least one image came back. ``reference_image`` becomes
    ``image`` + ``strength`` (ultra, and sd3 in image-to-image mode).
    A blurred ``CONTENT_FILTERED`` answer is :class:`Refused`, not an image.
    """

    kind: ClassVar[str] = "stability"
    settings_class: ClassVar[type[ProviderSettings]] = StabilitySettings
    key_env: ClassVar[str | None] = "STABILITY_API_KEY"
    default_base_url: ClassVar[str | None] = "https://api.stability.ai"

    settings: StabilitySettings

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if not isinstance(settings, StabilitySettings):
            settings = StabilitySettings.model_validate(settings.model_dump())
        super().__init__(name, settings, http)

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {
            name: ModelInfo(
                name=name,
                capabilities=Capabilities(
                    reference_image=spec.image_input,
                    negative_prompt=True,
                    seed=True,
                    aspect_ratios=ASPECT_RATIOS,
                    max_n=MAX_N,
                    output_formats=spec.formats,
                    max_width=MAX_SIDE,
                    max_height=MAX_SIDE,
                ),
                price_usd=spec.price,
                description=spec.description,
            )
            for name, spec in _MODELS.items()
        }

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model, _ = self.checked_model(request)
        spec = _MODELS[model]
        if request.edit_image is not None or request.mask is not None:
            raise InvalidRequest(f"{self.name}: {model} cannot edit images", provider=self.name)
        if request.reference_image is not None and not spec.image_input:
            raise InvalidRequest(
                f"{self.name}: {model} takes no reference image", provider=self.name
            )
        self.api_key()
        fmt = request.format if request.format in spec.formats else "png"
        fields = self._fields(spec, request, fmt)
        url = f"{self.base_url}/v2beta/stable-image/generate/{spec.endpoint}"

        def one(index: int) -> Callable[[], Awaitable[ProviderImage]]:
            seeded = dict(fields)
            if request.seed is not None:
                seeded["seed"] = str((request.seed + index) % (MAX_SEED + 1))
            return lambda: self._call(url, seeded, request.reference_image, fmt)

        images, failures = await gather_partial([one(i) for i in range(request.n)])
        metadata: dict[str, Any] = {"aspect_ratio": fields.get("aspect_ratio")}
        if failures:
            metadata["failed"] = [f.message for f in failures]
        return ProviderResult(
            images=images, model=model, cost_usd=spec.price * len(images), metadata=metadata
        )

    def _fields(self, spec: _Model, request: ProviderRequest, fmt: str) -> dict[str, str]:
        fields: dict[str, str] = {"prompt": request.prompt, "output_format": fmt}
        if request.negative_prompt:
            fields["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            fields["seed"] = str(request.seed)
        if request.style in STYLE_PRESETS:
            fields["style_preset"] = str(request.style)
        if spec.sd3_model is not None:
            fields["model"] = spec.sd3_model
        if request.reference_image is not None:
            fields["strength"] = str(self._strength(request))
            if spec.endpoint == "sd3":
                fields["mode"] = "image-to-image"
        else:
            # the output follows the input image's shape, so aspect_ratio is text-to-image only
            fields["aspect_ratio"] = nearest_aspect_ratio(
                ASPECT_RATIOS, request.width, request.height, request.aspect_ratio
            )
        return fields

    def _strength(self, request: ProviderRequest) -> float:
        value = request.options.get("strength", self.settings.image_strength)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise InvalidRequest(
                f"{self.name}: options.strength must be a number from 0 to 1", provider=self.name
            )
        return float(value)

    async def _call(
        self, url: str, fields: dict[str, str], image: bytes | None, fmt: str
    ) -> ProviderImage:
        # multipart even without a file: the API rejects url-encoded bodies, hence the
        # empty ``none`` part of Stability's own example
        if image is not None:
            files = [("image", ("image", image, sniff_image_type(image, "image/png")))]
        else:
            files = [("none", ("none", b"", "application/octet-stream"))]
        headers = {"authorization": f"Bearer {self.api_key()}", "accept": "image/*"}
        if self.settings.client_id:
            headers["stability-client-id"] = self.settings.client_id
        limit = self.settings.timeout_s
        try:
            async with asyncio.timeout(limit):
                response = await _http.request(
                    self.http,
                    self.name,
                    "POST",
                    url,
                    timeout=limit,
                    headers=headers,
                    data=fields,
                    files=files,
                )
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no answer within {limit:g} s", provider=self.name
            ) from None
        if response.status_code >= 400:
            raise self._error(response)
        return self._image(response, fmt)

    def _image(self, response: httpx.Response, fmt: str) -> ProviderImage:
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            try:
                body = _JSONImage.model_validate_json(response.content)
                data = base64.b64decode(body.image, validate=True)
            except (ValidationError, binascii.Error, ValueError):
                raise Transient(
                    f"{self.name}: malformed response body", provider=self.name
                ) from None
            finish, seed = body.finish_reason, body.seed
            content_type = _CONTENT_TYPES.get(fmt, "image/png")
        elif content_type.startswith("image/"):
            data = response.content
            finish = response.headers.get("finish-reason")
            raw_seed = response.headers.get("seed", "")
            seed = int(raw_seed) if raw_seed.isdigit() else None
        else:
            raise Transient(
                f"{self.name}: unexpected content type {content_type or 'none'!r}",
                provider=self.name,
            )
        if finish == "CONTENT_FILTERED":
            raise Refused(
                f"{self.name}: refused (CONTENT_FILTERED): the output was blurred by the "
                "content filter",
                provider=self.name,
            )
        if not data:
            raise Transient(f"{self.name}: empty image", provider=self.name)
        return ProviderImage(data=data, content_type=content_type, seed=seed)

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            body: _ErrorBody | None = _ErrorBody.model_validate_json(response.content)
        except ValidationError:
            body = None
        if body is not None and (body.name or body.errors):
            detail = ": ".join(p for p in (body.name, "; ".join(body.errors)) if p)
        else:
            detail = response.text[:500] or response.reason_phrase
        message = self._redact(f"{self.name}: HTTP {status}: {detail}")
        kwargs: dict[str, Any] = {"provider": self.name, "status_code": status}
        if status == 403 and body is not None and body.name == "content_moderation":
            return Refused(message, **kwargs)
        if status == 429:
            retry_after = _http.parse_retry_after(response.headers)
            return ProviderRateLimited(
                message, retry_after=LOCKOUT_S if retry_after is None else retry_after, **kwargs
            )
        if status == 402:
            # out of credits: an account problem, not load; take the provider out of the route
            return ProviderAuthError(message, **kwargs)
        base = _http.error_for_status(self.name, response)
        return type(base)(message, retry_after=base.retry_after, **kwargs)
