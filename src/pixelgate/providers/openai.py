"""OpenAI Images API adapter (gpt-image-1, gpt-image-1-mini, dall-e-3, dall-e-2).

Also :class:`OpenAICompatibleProvider` for self-hosted servers that speak the
same ``/images/generations`` and ``/images/edits`` protocol. A GPT image request that
asks for ``partial_images`` is sent with ``stream: true``: the previews are handed to
the job context as they arrive, the ``…completed`` event is the result.
Wire protocol: PROVIDERS.md §1 and ``provider-specs/openai-openapi.yaml``.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any, ClassVar, Literal

import httpx
from pydantic import ValidationError

from pixelgate.providers import _http
from pixelgate.providers._openai_models import (
    CAPS,
    CONTENT_TYPES,
    DESCRIPTIONS,
    SPECS,
    TOKEN_PRICE_USD,
    Size,
    Spec,
    api_quality,
    nearest_size,
    price_quality,
    streams,
)
from pixelgate.providers._openai_wire import (
    ErrorBody,
    ErrorEnvelope,
    ImageData,
    ImagesResponse,
    StreamEvent,
    extension,
    form_value,
    preview_bytes,
)
from pixelgate.providers._shapes import decode_image, sniff_image_type
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
    ProviderTimeout,
    Refused,
    Transient,
)

__all__ = [
    "OpenAICompatibleProvider",
    "OpenAICompatibleSettings",
    "OpenAIProvider",
    "OpenAISettings",
    "nearest_size",
]

HEALTH_TIMEOUT_S = 5.0
COMPAT_MAX_N = 4
#: error.code values of a safety refusal (GPT image / DALL·E), PROVIDERS.md §1 Errors
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})


class OpenAISettings(ProviderSettings):
    """Settings of an ``openai`` instance."""

    organization: str | None = None
    project: str | None = None
    #: how DALL·E returns images; GPT image models always return base64
    response_format: Literal["b64_json", "url"] = "b64_json"
    #: GPT image moderation level (``low`` is less strict); None leaves the API default
    moderation: Literal["auto", "low"] | None = None


class OpenAICompatibleSettings(OpenAISettings):
    """Settings of an ``openai_compatible`` instance (a self-hosted OpenAI images API)."""

    #: the model names the server offers
    models: list[str] = ["default"]
    #: whether the server implements ``/images/edits``
    supports_edit: bool = False
    #: what one image costs on this server (usually nothing)
    price_usd: Decimal = Decimal("0")


class OpenAIProvider(Provider):
    """OpenAI's Images API: ``/images/generations`` (JSON) and ``/images/edits`` (multipart).

    ``edit_image`` (with an optional ``mask``) and, for GPT image models,
    ``reference_image`` go through the edits endpoint. The API has no seed and no
    negative prompt; those request fields are ignored. DALL·E URLs are returned as
    ``ProviderImage(url=...)`` for the pipeline to fetch.
    """

    kind: ClassVar[str] = "openai"
    settings_class: ClassVar[type[ProviderSettings]] = OpenAISettings
    key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"

    settings: OpenAISettings

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if not isinstance(settings, self.settings_class):
            settings = self.settings_class.model_validate(settings.model_dump())
        super().__init__(name, settings, http)

    def offers(self, model: str) -> bool:
        return model in SPECS

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {
            name: ModelInfo(
                name=name,
                capabilities=CAPS[name],
                price_usd=self._unit_price(name, spec, None, spec.sizes[0]),
                description=DESCRIPTIONS[name],
            )
            for name, spec in SPECS.items()
        }

    def price(self, request: ProviderRequest) -> Decimal:
        """USD for ``request``: the per-image table price at the mapped size and quality, x n."""
        model = request.model or self.default_model
        self.model_info(model)
        spec = self._spec(model)
        size = self._size(spec, request)
        return self._unit_price(model, spec, request.quality, size) * request.n

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model, info = self.checked_model(request)
        spec = self._spec(model)
        size = self._size(spec, request)
        use_edit = request.edit_image is not None or (
            request.reference_image is not None and spec.family in ("gpt-image", "compat")
        )
        if use_edit and not info.capabilities.edit:
            raise InvalidRequest(f"{self.name}: {model} cannot edit images", provider=self.name)
        if request.reference_image is not None and not info.capabilities.reference_image:
            raise InvalidRequest(
                f"{self.name}: {model} takes no reference image", provider=self.name
            )

        fields = self._fields(model, spec, request, size, edit=use_edit)
        streamed = streams(spec, request)
        if streamed:
            fields.update(stream=True, partial_images=request.partial_images)
        sent_format = str(fields.get("output_format", "png"))
        path = self._path(model, "/images/edits" if use_edit else "/images/generations")
        body: dict[str, Any] = (
            {
                "data": {k: form_value(v) for k, v in fields.items()},
                "files": self._files(spec, request),
            }
            if use_edit
            else {"json": fields}
        )
        if streamed:
            answer, headers = await self._stream(path, ctx, sent_format, **body)
        else:
            response = await self._send("POST", path, **body)
            if response.status_code >= 400:
                raise self._error(response)
            answer, headers = self._parse(response.content), response.headers
        return self._result(model, spec, request, size, answer, headers, sent_format)

    async def health(self) -> Health:
        """GET ``/models`` with a short timeout; any failure reads as unhealthy."""
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        started = time.monotonic()
        try:
            response = await self._send(
                "GET", self._path(None, "/models"), deadline_s=HEALTH_TIMEOUT_S
            )
        except ProviderError as exc:
            return Health(healthy=False, status="unreachable", detail=exc.message)
        latency = (time.monotonic() - started) * 1000
        if response.status_code in (401, 403):
            return Health(healthy=False, status="auth_failed", latency_ms=latency)
        if response.status_code >= 400 and not self._reachable_is_healthy(response):
            detail = self._error(response).message
            return Health(healthy=False, status="degraded", detail=detail, latency_ms=latency)
        return Health(healthy=True, latency_ms=latency)

    # -- request building ------------------------------------------------------------

    def _spec(self, model: str) -> Spec:
        return SPECS[model]

    def _path(self, model: str | None, endpoint: str) -> str:
        """The path (and query) under ``base_url`` of ``endpoint`` for ``model``."""
        return endpoint

    def _unit_price(self, model: str, spec: Spec, quality: str | None, size: Size) -> Decimal:
        tier = price_quality(spec, quality)
        return spec.prices.get((tier, size), Decimal("0"))

    def _size(self, spec: Spec, request: ProviderRequest) -> Size:
        return nearest_size(spec.sizes, request.width, request.height, request.aspect_ratio)

    def _fields(
        self, model: str, spec: Spec, request: ProviderRequest, size: Size, *, edit: bool
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model": model,
            "prompt": request.prompt,
            "n": request.n,
            "size": f"{size[0]}x{size[1]}",
        }
        quality = api_quality(spec, request.quality)
        if quality is not None:
            fields["quality"] = quality
        if spec.family == "gpt-image":
            transparent = request.background == "transparent"
            fmt = request.format if request.format in CONTENT_TYPES else "png"
            if transparent and fmt == "jpeg":
                fmt = "png"
            fields["output_format"] = fmt
            if request.background in ("transparent", "opaque", "auto"):
                fields["background"] = request.background
            # ``moderation`` is not a field of the multipart edit body
            if self.settings.moderation is not None and not edit:
                fields["moderation"] = self.settings.moderation
            compression = request.options.get("output_compression")
            if isinstance(compression, int) and fmt in ("jpeg", "webp"):
                fields["output_compression"] = compression
        else:
            fields["response_format"] = self._response_format(request)
            if spec.family == "dall-e-3" and request.style in ("vivid", "natural"):
                fields["style"] = request.style
            if spec.family == "compat" and request.style:
                fields["style"] = request.style
        return fields

    def _response_format(self, request: ProviderRequest) -> str:
        wanted = request.options.get("response_format")
        if wanted in ("b64_json", "url"):
            return str(wanted)
        return self.settings.response_format

    def _files(self, spec: Spec, request: ProviderRequest) -> list[tuple[str, Any]]:
        images = [b for b in (request.edit_image, request.reference_image) if b is not None]
        # GPT image models take up to 16 images as repeated ``image[]`` parts; the mask
        # applies to the first one, so the image being edited goes first.
        part = "image[]" if spec.family == "gpt-image" else "image"
        if part == "image":
            images = images[:1]
        files: list[tuple[str, Any]] = [
            (part, (f"image{i}.{extension(data)}", data, sniff_image_type(data)))
            for i, data in enumerate(images)
        ]
        if request.mask is not None:
            files.append(("mask", ("mask.png", request.mask, "image/png")))
        return files

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.settings.api_key is not None or self.needs_key:
            headers["Authorization"] = f"Bearer {self.api_key()}"
        if self.settings.organization:
            headers["OpenAI-Organization"] = self.settings.organization
        if self.settings.project:
            headers["OpenAI-Project"] = self.settings.project
        return headers

    async def _send(
        self, method: str, path: str, *, deadline_s: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call under a total deadline (httpx's timeouts are per read, not per request)."""
        limit = deadline_s if deadline_s is not None else self.settings.timeout_s
        return await _http.request_within(
            self.http,
            self.name,
            method,
            self.base_url + path,
            deadline_s=limit,
            headers=self._headers(),
            **kwargs,
        )

    async def _stream(
        self, path: str, ctx: JobContext, sent_format: str, **kwargs: Any
    ) -> tuple[ImagesResponse, httpx.Headers]:
        """POST with ``stream: true`` under the total deadline: previews go to ``ctx`` as
        they arrive; the ``…completed`` event is returned as an ``ImagesResponse``."""
        limit = self.settings.timeout_s
        try:
            async with asyncio.timeout(limit):
                async with self.http.stream(
                    "POST", self.base_url + path, timeout=limit, headers=self._headers(), **kwargs
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise self._error(response)
                    if not response.headers.get("content-type", "").startswith(
                        "text/event-stream"
                    ):  # a server that ignores ``stream`` answers with the usual JSON body
                        return self._parse(await response.aread()), response.headers
                    answer = await self._read_events(response, ctx, sent_format)
                    return answer, response.headers
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no answer within {limit:g} s", provider=self.name
            ) from None
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"{self.name}: request timed out", provider=self.name) from exc
        except httpx.HTTPError as exc:
            raise Transient(f"{self.name}: {type(exc).__name__}", provider=self.name) from exc

    async def _read_events(
        self, response: httpx.Response, ctx: JobContext, sent_format: str
    ) -> ImagesResponse:
        async for sse in _http.server_sent_events(response.aiter_lines()):
            try:
                event = StreamEvent.model_validate_json(sse.data)
            except ValidationError:
                message = f"{self.name}: malformed stream event"
                raise Transient(message, provider=self.name) from None
            if event.error is not None:
                raise self._stream_error(event.error)
            kind = event.type or sse.event or ""
            if kind.endswith(".partial_image"):
                preview = preview_bytes(event.b64_json)
                if preview is not None:  # a broken preview is skipped, not fatal
                    fmt = event.output_format or sent_format
                    await ctx.partial_image(event.partial_image_index or 0, preview, fmt)
            elif kind.endswith(".completed"):
                return ImagesResponse(
                    created=event.created_at,
                    data=[ImageData(b64_json=event.b64_json)],
                    output_format=event.output_format,
                    usage=event.usage,
                )
        raise Transient(f"{self.name}: the stream ended before the image", provider=self.name)

    def _stream_error(self, error: ErrorBody) -> ProviderError:
        message = self._redact(f"{self.name}: stream error: {error.message or error.code}")
        if error.code in REFUSAL_CODES:
            return Refused(message, provider=self.name)
        if error.code == "rate_limit_exceeded":
            return ProviderRateLimited(message, provider=self.name)
        if error.type == "invalid_request_error":
            return InvalidRequest(message, provider=self.name)
        return Transient(message, provider=self.name)

    # -- response handling -----------------------------------------------------------

    def _parse(self, content: bytes) -> ImagesResponse:
        try:
            return ImagesResponse.model_validate_json(content)
        except ValidationError:
            raise Transient(f"{self.name}: malformed response body", provider=self.name) from None

    def _result(
        self,
        model: str,
        spec: Spec,
        request: ProviderRequest,
        size: Size,
        body: ImagesResponse,
        headers: httpx.Headers,
        sent_format: str,
    ) -> ProviderResult:
        if not body.data:
            raise Transient(f"{self.name}: response has no images", provider=self.name)
        fmt = body.output_format or sent_format
        content_type = CONTENT_TYPES.get(fmt, "image/png")
        images: list[ProviderImage] = []
        for item in body.data:
            if item.b64_json:
                images.append(
                    ProviderImage(
                        data=decode_image(self.name, item.b64_json), content_type=content_type
                    )
                )
            elif item.url:
                images.append(ProviderImage(url=item.url))
            else:
                raise Transient(f"{self.name}: image without data or url", provider=self.name)
        metadata: dict[str, Any] = {"size": f"{size[0]}x{size[1]}"}
        if request_id := headers.get("x-request-id"):
            metadata["request_id"] = request_id
        revised = [item.revised_prompt for item in body.data if item.revised_prompt]
        if revised:
            metadata["revised_prompt"] = revised
        if body.usage is not None:
            metadata["usage"] = body.usage.model_dump()
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=self._cost(model, spec, request, size, body, len(images)),
            metadata=metadata,
        )

    def _cost(
        self,
        model: str,
        spec: Spec,
        request: ProviderRequest,
        size: Size,
        body: ImagesResponse,
        count: int,
    ) -> Decimal:
        token_price = TOKEN_PRICE_USD.get(model)
        if token_price is not None and body.usage is not None:
            details = body.usage.output_tokens_details
            tokens = (
                details.image_tokens
                if details is not None and details.image_tokens is not None
                else body.usage.output_tokens
            )
            return token_price * tokens
        return self._unit_price(model, spec, request.quality, size) * count

    def _reachable_is_healthy(self, response: httpx.Response) -> bool:
        return False

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            envelope: ErrorEnvelope | None = ErrorEnvelope.model_validate_json(response.content)
        except ValidationError:
            envelope = None
        if envelope is not None and envelope.error.message:
            detail = envelope.error.message
        else:
            detail = response.text[:500] or response.reason_phrase
        code = envelope.error.code if envelope is not None else None
        message = self._redact(f"{self.name}: HTTP {status}: {detail}")
        if status == 400 and code in REFUSAL_CODES:
            return Refused(message, provider=self.name, status_code=status)
        if status == 429 and code == "insufficient_quota":
            # billing, not load: waiting will not help, so take this provider out of the route
            return ProviderAuthError(message, provider=self.name, status_code=status)
        base = _http.error_for_status(self.name, response)
        return type(base)(
            message, provider=self.name, retry_after=base.retry_after, status_code=status
        )


class OpenAICompatibleProvider(OpenAIProvider):
    """A self-hosted server with OpenAI's images API (LocalAI, vLLM, SD front-ends...).

    Needs ``base_url``; the key is optional. Sizes are passed through as ``WxH``.
    """

    kind: ClassVar[str] = "openai_compatible"
    settings_class: ClassVar[type[ProviderSettings]] = OpenAICompatibleSettings
    key_env: ClassVar[str | None] = None
    default_base_url: ClassVar[str | None] = None
    needs_key: ClassVar[bool] = False

    settings: OpenAICompatibleSettings

    @property
    def configured(self) -> bool:
        return bool(self.settings.base_url) and super().configured

    def offers(self, model: str) -> bool:
        return model in self.settings.models

    @property
    def models(self) -> dict[str, ModelInfo]:
        caps = Capabilities(
            edit=self.settings.supports_edit,
            mask=self.settings.supports_edit,
            reference_image=self.settings.supports_edit,
            max_n=COMPAT_MAX_N,
        )
        return {
            name: ModelInfo(name=name, capabilities=caps, price_usd=self.settings.price_usd)
            for name in self.settings.models
        }

    def _spec(self, model: str) -> Spec:
        return Spec("compat", (), "standard")

    def _unit_price(self, model: str, spec: Spec, quality: str | None, size: Size) -> Decimal:
        return self.settings.price_usd

    def _size(self, spec: Spec, request: ProviderRequest) -> Size:
        return (request.width, request.height)

    def _reachable_is_healthy(self, response: httpx.Response) -> bool:
        # many servers have no /models: an answer below 500 still means the server is up
        return response.status_code < 500
