"""Gemini API image adapter: Gemini 2.5 Flash Image ("nano banana") via ``generateContent``.

Also home of :class:`GoogleAPIProvider`, the auth, error-envelope and health
plumbing shared with the Imagen adapter (same host, key header and errors).
Wire protocol: PROVIDERS.md §2 (and §3 for the shared envelope).
"""

from __future__ import annotations

import base64
import re
import time
from decimal import Decimal
from typing import Any, ClassVar, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from pixelgate.providers import _http
from pixelgate.providers._shapes import (
    decode_image,
    gather_partial,
    nearest_aspect_ratio,
    sniff_image_type,
)
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
    ProviderRateLimited,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
    Refused,
    Transient,
)

__all__ = [
    "GeminiProvider",
    "GeminiSettings",
    "GoogleAPIProvider",
]

GOOGLE_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
HEALTH_TIMEOUT_S = 5.0
MAX_N = 4
#: largest output sides: 21:9 is 1536x672 and 9:16 is 768x1344 (about 1 MP per image)
MAX_WIDTH = 1536
MAX_HEIGHT = 1536
#: aspect ratios of 2.5 Flash Image per the python-genai docstring (PROVIDERS.md §2);
#: 4:5 and 5:4 are left out because Google's own docs do not confirm them
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
#: finishReason / blockReason values that mean "will not draw this" rather than a glitch
REFUSAL_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "NO_IMAGE",
    }
)
# $30 per 1M image-output tokens; one image up to 1024² is 1290 tokens, about $0.039.
# PROVIDERS.md §2, quoting ai.google.dev/pricing (snapshot 2026-08-21). Dated hint only.
IMAGE_TOKEN_PRICE_USD = Decimal("30") / Decimal(1_000_000)
PRICE_PER_IMAGE_USD = Decimal("0.039")
_RETRY_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
T = TypeVar("T")


class GeminiSettings(ProviderSettings):
    """Settings of a ``gemini`` instance."""

    #: ``imageConfig.personGeneration``; None leaves the API default
    person_generation: Literal["ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"] | None = None


class GoogleJSON(BaseModel):
    """Base of Google JSON bodies: camelCase on the wire, snake_case in Python."""

    # Google's JSON accepts and may return either camelCase or proto snake_case names
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class _ErrorDetail(GoogleJSON):
    type: str | None = Field(None, alias="@type")
    retry_delay: str | None = None
    reason: str | None = None


class _ErrorBody(GoogleJSON):
    code: int | None = None
    message: str | None = None
    status: str | None = None
    details: list[_ErrorDetail] = []


class _ErrorEnvelope(GoogleJSON):
    error: _ErrorBody


_ERROR_ADAPTER: TypeAdapter[_ErrorEnvelope | list[_ErrorEnvelope]] = TypeAdapter(
    _ErrorEnvelope | list[_ErrorEnvelope]
)


class _InlineData(GoogleJSON):
    mime_type: str | None = None
    data: str


class _Part(GoogleJSON):
    text: str | None = None
    inline_data: _InlineData | None = None
    thought: bool | None = None


class _Content(GoogleJSON):
    parts: list[_Part] = []


class _Candidate(GoogleJSON):
    content: _Content | None = None
    finish_reason: str | None = None
    finish_message: str | None = None


class _PromptFeedback(GoogleJSON):
    block_reason: str | None = None
    block_reason_message: str | None = None


class _TokenCount(GoogleJSON):
    modality: str | None = None
    token_count: int = 0


class _UsageMetadata(GoogleJSON):
    candidates_tokens_details: list[_TokenCount] = []


class _GenerateResponse(GoogleJSON):
    candidates: list[_Candidate] = []
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None


class GoogleAPIProvider(Provider):
    """Shared plumbing of the Gemini API adapters: key header, error envelope, health."""

    default_base_url: ClassVar[str | None] = GOOGLE_BASE_URL
    key_env: ClassVar[str | None] = "GEMINI_API_KEY"

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if not isinstance(settings, self.settings_class):
            settings = self.settings_class.model_validate(settings.model_dump())
        super().__init__(name, settings, http)

    async def health(self) -> Health:
        """GET the default model's metadata with a short timeout (cheap; proves key and model)."""
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        started = time.monotonic()
        try:
            response = await self._send(
                "GET", f"/models/{self.default_model}", deadline_s=HEALTH_TIMEOUT_S
            )
        except ProviderError as exc:
            return Health(healthy=False, status="unreachable", detail=exc.message)
        latency = (time.monotonic() - started) * 1000
        if response.status_code >= 400:
            error = self._error(response)
            status = "auth_failed" if isinstance(error, ProviderAuthError) else "degraded"
            return Health(healthy=False, status=status, detail=error.message, latency_ms=latency)
        return Health(healthy=True, latency_ms=latency)

    async def _send(
        self, method: str, path: str, *, deadline_s: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call under a total deadline (httpx's timeouts are per read, not per request)."""
        limit = deadline_s if deadline_s is not None else self.settings.timeout_s
        headers = {"x-goog-api-key": self.api_key()}
        return await _http.request_within(
            self.http,
            self.name,
            method,
            self.base_url + path,
            deadline_s=limit,
            headers=headers,
            **kwargs,
        )

    def _error(self, response: httpx.Response) -> ProviderError:
        """Map Google's ``{"error": {code, message, status, details}}`` onto the taxonomy."""
        status = response.status_code
        try:
            parsed = _ERROR_ADAPTER.validate_json(response.content)
        except ValidationError:
            parsed = None
        body = (parsed[0] if parsed else None) if isinstance(parsed, list) else parsed
        error = body.error if body is not None else _ErrorBody()
        detail = error.message or response.text[:500] or response.reason_phrase
        label = f" {error.status}" if error.status else ""
        message = self._redact(f"{self.name}: HTTP {status}{label}: {detail}")
        kwargs: dict[str, Any] = {"provider": self.name, "status_code": status}
        reasons = {d.reason for d in error.details if d.reason}
        if "API_KEY_INVALID" in reasons or status in (401, 403):
            return ProviderAuthError(message, **kwargs)
        if status == 429:
            delay = next((_seconds(d.retry_delay) for d in error.details if d.retry_delay), None)
            if delay is None:
                delay = _http.parse_retry_after(response.headers)
            return ProviderRateLimited(message, retry_after=delay, **kwargs)
        base = _http.error_for_status(self.name, response)
        return type(base)(message, retry_after=base.retry_after, **kwargs)


class GeminiProvider(GoogleAPIProvider):
    """Gemini 2.5 Flash Image through ``models/{m}:generateContent``.

    The API makes one image per call, so ``n`` > 1 runs ``n`` calls at once
    (``max_n`` = 4). Calls that fail are dropped when at least one image came
    back (``metadata["failed"]`` lists why); with no image at all the most
    actionable error is raised. ``edit_image`` and ``reference_image`` are sent as
    inline image parts; there is no mask, seed or negative prompt (the latter two
    are ignored).
    """

    kind: ClassVar[str] = "gemini"
    settings_class: ClassVar[type[ProviderSettings]] = GeminiSettings

    settings: GeminiSettings

    @property
    def models(self) -> dict[str, ModelInfo]:
        caps = Capabilities(
            edit=True,
            reference_image=True,
            aspect_ratios=ASPECT_RATIOS,
            max_n=MAX_N,
            output_formats=("png",),
            max_width=MAX_WIDTH,
            max_height=MAX_HEIGHT,
        )
        return {
            "gemini-2.5-flash-image": ModelInfo(
                name="gemini-2.5-flash-image",
                capabilities=caps,
                price_usd=PRICE_PER_IMAGE_USD,
                description="Gemini 2.5 Flash Image: generation and editing by instruction",
            )
        }

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model, _ = self.checked_model(request)
        if request.mask is not None:
            raise InvalidRequest(f"{self.name}: {model} takes no mask", provider=self.name)
        self.api_key()
        ratio = nearest_aspect_ratio(
            ASPECT_RATIOS, request.width, request.height, request.aspect_ratio
        )
        body = self._body(request, ratio)
        path = f"/models/{model}:generateContent"

        async def one() -> tuple[list[ProviderImage], Decimal, str | None]:
            return await self._call(path, body)

        calls, failures = await gather_partial([one] * request.n)
        images = [image for call in calls for image in call[0]]
        cost = sum((call[1] for call in calls), Decimal("0"))
        metadata: dict[str, Any] = {"aspect_ratio": ratio}
        if failures:
            metadata["failed"] = [f.message for f in failures]
        versions = {call[2] for call in calls if call[2]}
        if versions:
            metadata["model_version"] = sorted(versions)[0]
        return ProviderResult(images=images, model=model, cost_usd=cost, metadata=metadata)

    def _body(self, request: ProviderRequest, ratio: str) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": request.prompt}]
        for data in (request.edit_image, request.reference_image):
            if data is not None:
                parts.append(
                    {
                        "inlineData": {
                            "mimeType": sniff_image_type(data),
                            "data": base64.b64encode(data).decode("ascii"),
                        }
                    }
                )
        image_config: dict[str, Any] = {"aspectRatio": ratio}
        if self.settings.person_generation:
            image_config["personGeneration"] = self.settings.person_generation
        return {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": image_config,
            },
        }

    async def _call(
        self, path: str, body: dict[str, Any]
    ) -> tuple[list[ProviderImage], Decimal, str | None]:
        response = await self._send("POST", path, json=body)
        if response.status_code >= 400:
            raise self._error(response)
        try:
            parsed = _GenerateResponse.model_validate_json(response.content)
        except ValidationError:
            raise Transient(f"{self.name}: malformed response body", provider=self.name) from None
        images: list[ProviderImage] = []
        texts: list[str] = []
        for candidate in parsed.candidates:
            for part in candidate.content.parts if candidate.content else []:
                if part.thought:
                    continue
                inline = part.inline_data
                if inline is not None and (inline.mime_type or "image/").startswith("image/"):
                    images.append(
                        ProviderImage(
                            data=decode_image(self.name, inline.data),
                            content_type=inline.mime_type or "image/png",
                        )
                    )
                elif part.text:
                    texts.append(part.text.strip())
        if not images:
            raise self._no_image(parsed, texts)
        return images, self._cost(parsed, len(images)), parsed.model_version

    def _no_image(self, parsed: _GenerateResponse, texts: list[str]) -> ProviderError:
        feedback = parsed.prompt_feedback
        finish = next((c.finish_reason for c in parsed.candidates if c.finish_reason), None)
        reason = (feedback.block_reason if feedback else None) or finish
        explanation = [
            *texts,
            *(c.finish_message for c in parsed.candidates if c.finish_message),
            *(
                [feedback.block_reason_message]
                if feedback and feedback.block_reason_message
                else []
            ),
        ]
        said = f": {' '.join(explanation)}" if explanation else ""
        if (feedback is not None and feedback.block_reason) or finish in REFUSAL_REASONS:
            return Refused(
                self._redact(f"{self.name}: refused ({reason}){said}"), provider=self.name
            )
        return Transient(
            self._redact(f"{self.name}: no image in response (finishReason {reason}){said}"),
            provider=self.name,
        )

    def _cost(self, parsed: _GenerateResponse, count: int) -> Decimal:
        usage = parsed.usage_metadata
        tokens = sum(
            d.token_count
            for d in (usage.candidates_tokens_details if usage else [])
            if d.modality == "IMAGE"
        )
        if tokens:
            return IMAGE_TOKEN_PRICE_USD * tokens
        return PRICE_PER_IMAGE_USD * count


def _seconds(delay: str | None) -> float | None:
    match = _RETRY_DELAY.match(delay or "")
    return float(match.group(1)) if match else None
