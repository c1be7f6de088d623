"""Ideogram adapter: v3 ``/v1/ideogram-v3/generate`` (multipart) and legacy v2 ``/generate``.

Wire protocol: PROVIDERS.md §7. The API is synchronous. Images come back as
ephemeral ``data[].url`` links that need no auth, so they are returned as URLs for
the pipeline to download at once. Images with ``is_image_safe: false`` carry no URL
and are dropped; when every image is unsafe the call is a refusal.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, ValidationError

from pixelgate.providers._http import error_for_status, parse, request
from pixelgate.providers.base import (
    Capabilities,
    InvalidRequest,
    JobContext,
    ModelInfo,
    Provider,
    ProviderError,
    ProviderImage,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
    Refused,
    Transient,
)

__all__ = ["IdeogramProvider", "IdeogramSettings"]

V3_PATH = "/v1/ideogram-v3/generate"
V2_PATH = "/generate"
MAX_IMAGES = 8
_SAFETY = re.compile(r"safety|unsafe|prohibited|nsfw|moderat", re.IGNORECASE)

V3_RATIOS = (
    "1x3", "3x1", "1x2", "2x1", "9x16", "16x9", "10x16", "16x10",
    "2x3", "3x2", "3x4", "4x3", "4x5", "5x4", "1x1",
)  # fmt: skip
V2_RATIOS = ("10x16", "16x10", "9x16", "16x9", "3x2", "2x3", "4x3", "3x4", "1x1", "1x3", "3x1")
V3_STYLES = frozenset({"AUTO", "GENERAL", "REALISTIC", "DESIGN", "CUSTOM", "FICTION", "STYLIZED"})
V2_STYLES = frozenset(
    {"AUTO", "GENERAL", "FICTION", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME", "CUSTOM"}
)
RENDERING_SPEEDS = frozenset({"FLASH", "TURBO", "BALANCED", "DEFAULT", "QUALITY"})
MAGIC_PROMPT = frozenset({"AUTO", "ON", "OFF"})


@dataclass(frozen=True)
class _Model:
    api: Literal["v3", "v2"]
    #: v3: rendering_speed; v2: the ``image_request.model`` enum value
    variant: str
    price_usd: Decimal
    description: str


# Prices per output image, PROVIDERS.md §7 (Ideogram spec mirror 2026-06; *observed*):
# v3 Flash/Turbo $0.03, Default/Balanced $0.06, Quality $0.09; v2 about $0.08 and
# v2 Turbo about $0.05 (unconfirmed).
MODELS: dict[str, _Model] = {
    "ideogram-v3": _Model("v3", "DEFAULT", Decimal("0.06"), "Ideogram 3.0"),
    "ideogram-v3-turbo": _Model("v3", "TURBO", Decimal("0.03"), "Ideogram 3.0, turbo speed"),
    "ideogram-v3-flash": _Model("v3", "FLASH", Decimal("0.03"), "Ideogram 3.0, flash speed"),
    "ideogram-v3-quality": _Model("v3", "QUALITY", Decimal("0.09"), "Ideogram 3.0, quality"),
    "ideogram-v2": _Model("v2", "V_2", Decimal("0.08"), "Ideogram 2.0 (legacy API)"),
    "ideogram-v2-turbo": _Model("v2", "V_2_TURBO", Decimal("0.05"), "Ideogram 2.0 turbo"),
}


class IdeogramSettings(ProviderSettings):
    """Settings of a ``kind = "ideogram"`` instance."""

    kind: str = "ideogram"
    #: ``magic_prompt`` default (``AUTO``/``ON``/``OFF``); None leaves Ideogram's default
    magic_prompt: str | None = None


class _Image(BaseModel):
    url: str | None = None
    is_image_safe: bool
    seed: int | None = None
    resolution: str | None = None
    prompt: str | None = None


class _Response(BaseModel):
    data: list[_Image] = Field(default_factory=list)


class _ErrorBody(BaseModel):
    error: str | None = None


class IdeogramProvider(Provider):
    """Ideogram text-to-image (v3 multipart API and the legacy v2 JSON API)."""

    kind = "ideogram"
    settings_class = IdeogramSettings
    key_env = "IDEOGRAM_API_KEY"
    default_base_url = "https://api.ideogram.ai"

    settings: IdeogramSettings

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {name: _info(name, spec) for name, spec in MODELS.items()}

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model = request.model or self.default_model
        spec = MODELS.get(model)
        if spec is None:
            raise InvalidRequest(f"{self.name}: unknown model {model!r}", provider=self.name)

        async def send() -> httpx.Response:
            if spec.api == "v3":
                return await self._call(V3_PATH, files=_v3_parts(spec, request, self.settings))
            return await self._call(V2_PATH, json=_v2_body(spec, request, self.settings))

        return self._finish(model, spec, await self._run_job(send))

    # -- internals -----------------------------------------------------------------

    async def _call(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Api-Key": self.api_key()}
        response = await request(
            self.http, self.name, "POST", f"{self.base_url}{path}", headers=headers, **kwargs
        )
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ProviderError:
        try:
            detail = _ErrorBody.model_validate_json(response.content).error
        except ValidationError:
            detail = None
        if detail and response.status_code in (400, 422):
            message = f"{self.name}: HTTP {response.status_code}: {detail[:500]}"
            if _SAFETY.search(detail):
                return Refused(message, provider=self.name, status_code=response.status_code)
            return InvalidRequest(message, provider=self.name, status_code=response.status_code)
        return error_for_status(self.name, response)

    def _finish(self, model: str, spec: _Model, response: httpx.Response) -> ProviderResult:
        body = parse(self.name, _Response, response)
        safe = [img for img in body.data if img.is_image_safe and img.url]
        if not safe:
            if body.data:
                raise Refused(
                    f"{self.name}: every image failed Ideogram's safety check", provider=self.name
                )
            raise Transient(f"{self.name}: response has no images", provider=self.name)
        images = [ProviderImage(url=img.url, seed=img.seed) for img in safe]
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=spec.price_usd * len(images),
            metadata={
                "dropped_unsafe": len(body.data) - len(safe),
                "prompts": [img.prompt for img in safe],
            },
        )


def _info(name: str, spec: _Model) -> ModelInfo:
    caps = Capabilities(
        negative_prompt=True,
        seed=True,
        aspect_ratios=tuple(
            r.replace("x", ":") for r in (V3_RATIOS if spec.api == "v3" else V2_RATIOS)
        ),
        max_n=MAX_IMAGES,
        output_formats=("png",),
    )
    return ModelInfo(name, caps, spec.price_usd, spec.description)


def _ratio(request: ProviderRequest, allowed: tuple[str, ...]) -> str:
    """Ideogram's ``WxH`` ratio for the request (its own, else the nearest to width/height)."""
    if request.aspect_ratio:
        wanted = request.aspect_ratio.replace(":", "x")
        if wanted in allowed:
            return wanted
    target = math.log(request.width / request.height)

    def distance(ratio: str) -> float:
        w, _, h = ratio.partition("x")
        return abs(math.log(float(w) / float(h)) - target)

    return min(allowed, key=distance)


def _style(request: ProviderRequest, allowed: frozenset[str]) -> str | None:
    raw = request.options.get("style_type") or request.style
    if isinstance(raw, str) and raw.upper() in allowed:
        return raw.upper()
    return None


def _magic_prompt(request: ProviderRequest, settings: IdeogramSettings) -> str | None:
    raw = request.options.get("magic_prompt", settings.magic_prompt)
    if isinstance(raw, bool):
        return "ON" if raw else "OFF"
    if isinstance(raw, str) and raw.upper() in MAGIC_PROMPT:
        return raw.upper()
    return None


def _v3_parts(
    spec: _Model, request: ProviderRequest, settings: IdeogramSettings
) -> list[tuple[str, tuple[None, str] | tuple[None, str, str]]]:
    """Multipart fields (no file parts, so every field is a ``(None, value)`` part)."""
    speed = str(request.options.get("rendering_speed", spec.variant)).upper()
    fields: dict[str, Any] = {
        "prompt": request.prompt,
        "rendering_speed": speed if speed in RENDERING_SPEEDS else spec.variant,
        "aspect_ratio": _ratio(request, V3_RATIOS),
        "num_images": min(request.n, MAX_IMAGES),
        "negative_prompt": request.negative_prompt,
        "seed": request.seed,
        "style_type": _style(request, V3_STYLES),
        "style_preset": request.options.get("style_preset"),
        "magic_prompt": _magic_prompt(request, settings),
    }
    parts: list[tuple[str, tuple[None, str] | tuple[None, str, str]]] = [
        (name, (None, str(value))) for name, value in fields.items() if value is not None
    ]
    palette = request.options.get("color_palette")
    if palette is not None:
        parts.append(("color_palette", (None, json.dumps(palette), "application/json")))
    return parts


def _v2_body(spec: _Model, request: ProviderRequest, settings: IdeogramSettings) -> dict[str, Any]:
    ratio = _ratio(request, V2_RATIOS).replace("x", "_")
    image_request: dict[str, Any] = {
        "prompt": request.prompt,
        "model": spec.variant,
        "aspect_ratio": f"ASPECT_{ratio}",
        "num_images": min(request.n, MAX_IMAGES),
    }
    optional = {
        "negative_prompt": request.negative_prompt,
        "seed": request.seed,
        "style_type": _style(request, V2_STYLES),
        "magic_prompt_option": _magic_prompt(request, settings),
        "color_palette": request.options.get("color_palette"),
    }
    image_request.update({k: v for k, v in optional.items() if v is not None})
    return {"image_request": image_request}
