"""Imagen 4 adapter on the Gemini API (``models/{m}:predict``).

Wire protocol: PROVIDERS.md §3. Google has announced the end of Imagen on the
Gemini API (Vertex stays); a retired model answers 404, mapped to
``InvalidRequest``, and ``health()`` reports it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import ValidationError

from pixelgate.providers._shapes import decode_image, nearest_aspect_ratio
from pixelgate.providers.base import (
    Capabilities,
    InvalidRequest,
    JobContext,
    ModelInfo,
    ProviderImage,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
    Refused,
    Transient,
)
from pixelgate.providers.gemini import GoogleAPIProvider, GoogleJSON

__all__ = ["ImagenProvider", "ImagenSettings"]

ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
MAX_N = 4
#: requests above this many pixels ask for ``sampleImageSize: 2K`` (1K is about 1 MP)
TWO_K_ABOVE_PIXELS = 1536 * 1024
FAST_MODEL = "imagen-4.0-fast-generate-001"
#: largest output side: 1K tops out at 1408x768, 2K (not Fast) at 2816x1536
MAX_SIDE_1K = 1408
MAX_SIDE_2K = 2816
# USD per image on the Gemini API paid tier: PROVIDERS.md §3, quoting ai.google.dev/pricing
# (snapshot 2026-08-21, *observed*). Filtered images are not returned and not billed.
PRICES_USD: dict[str, Decimal] = {
    FAST_MODEL: Decimal("0.02"),
    "imagen-4.0-generate-001": Decimal("0.04"),
    "imagen-4.0-ultra-generate-001": Decimal("0.06"),
}
_DESCRIPTIONS = {
    FAST_MODEL: "Imagen 4 Fast",
    "imagen-4.0-generate-001": "Imagen 4",
    "imagen-4.0-ultra-generate-001": "Imagen 4 Ultra",
}
_MIME = {"png": "image/png", "jpeg": "image/jpeg"}


class ImagenSettings(ProviderSettings):
    """Settings of an ``imagen`` instance (values the Gemini API accepts; not Vertex-only ones)."""

    person_generation: Literal["DONT_ALLOW", "ALLOW_ADULT"] | None = None
    safety_setting: (
        Literal["BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH"] | None
    ) = None


class _Prediction(GoogleJSON):
    bytes_base64_encoded: str | None = None
    mime_type: str | None = None
    rai_filtered_reason: str | None = None


class _PredictResponse(GoogleJSON):
    predictions: list[_Prediction] = []


class ImagenProvider(GoogleAPIProvider):
    """Imagen 4 (fast, standard, ultra): up to 4 images per call, text-to-image only.

    ``negativePrompt``, ``seed`` and ``addWatermark`` are Vertex-only, so the
    request's negative prompt and seed are not sent. Images the safety filter
    drops are simply missing from the answer: fewer images than asked are
    returned as they are (reasons in ``metadata["filtered"]``); none at all is
    :class:`Refused`.
    """

    kind: ClassVar[str] = "imagen"
    settings_class: ClassVar[type[ProviderSettings]] = ImagenSettings

    settings: ImagenSettings

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {
            name: ModelInfo(
                name=name,
                capabilities=Capabilities(
                    aspect_ratios=ASPECT_RATIOS,
                    max_n=MAX_N,
                    output_formats=("png", "jpeg"),
                    max_width=MAX_SIDE_1K if name == FAST_MODEL else MAX_SIDE_2K,
                    max_height=MAX_SIDE_1K if name == FAST_MODEL else MAX_SIDE_2K,
                ),
                price_usd=price,
                description=_DESCRIPTIONS[name],
            )
            for name, price in PRICES_USD.items()
        }

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model, info = self.checked_model(request)
        if request.edit_image is not None or request.reference_image is not None:
            raise InvalidRequest(f"{self.name}: {model} takes no input image", provider=self.name)
        ratio = nearest_aspect_ratio(
            ASPECT_RATIOS, request.width, request.height, request.aspect_ratio
        )
        body = {
            "instances": [{"prompt": request.prompt}],
            "parameters": self._parameters(model, request, ratio),
        }
        response = await self._send("POST", f"/models/{model}:predict", json=body)
        if response.status_code >= 400:
            raise self._error(response)
        try:
            parsed = _PredictResponse.model_validate_json(response.content)
        except ValidationError:
            raise Transient(f"{self.name}: malformed response body", provider=self.name) from None

        images: list[ProviderImage] = []
        filtered: list[str] = []
        for prediction in parsed.predictions:
            if prediction.bytes_base64_encoded:
                images.append(
                    ProviderImage(
                        data=decode_image(self.name, prediction.bytes_base64_encoded),
                        content_type=prediction.mime_type or _MIME.get(request.format, "image/png"),
                    )
                )
            elif prediction.rai_filtered_reason:
                filtered.append(prediction.rai_filtered_reason)
        if not images:
            reason = "; ".join(filtered) or "no image returned (filtered by the safety system)"
            raise Refused(self._redact(f"{self.name}: refused: {reason}"), provider=self.name)
        metadata: dict[str, Any] = {"aspect_ratio": ratio}
        if filtered or len(images) < request.n:
            metadata["filtered"] = filtered or [f"{request.n - len(images)} image(s) dropped"]
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=info.price_usd * len(images),
            metadata=metadata,
        )

    def _parameters(self, model: str, request: ProviderRequest, ratio: str) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "sampleCount": request.n,
            "aspectRatio": ratio,
            "includeRaiReason": True,
        }
        if self.settings.person_generation:
            parameters["personGeneration"] = self.settings.person_generation
        if self.settings.safety_setting:
            parameters["safetySetting"] = self.settings.safety_setting
        # sampleImageSize exists for Standard and Ultra only (PROVIDERS.md §3)
        if model != FAST_MODEL and request.width * request.height > TWO_K_ABOVE_PIXELS:
            parameters["sampleImageSize"] = "2K"
        if request.format == "jpeg":
            parameters["outputOptions"] = {"mimeType": "image/jpeg"}
        return parameters
