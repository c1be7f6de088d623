"""AWS Bedrock adapter: ``InvokeModel`` for Nova Canvas, Titan Image v2 and Stability.

Requests are signed with botocore's SigV4 signer (service ``bedrock``) over the
exact bytes sent through the pooled httpx client, with credentials from the
standard AWS chain (environment, profile/SSO, container or instance role;
extra ``pixelgate[bedrock]``), or carry a Bedrock API key as a bearer token
(``AWS_BEARER_TOKEN_BEDROCK``). Wire protocol: PROVIDERS-2.md §3; the error
names and statuses come from botocore's ``bedrock-runtime`` service model.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from pixelgate.providers import _http
from pixelgate.providers._aws import Auth, AwsAuth, sign
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
    ProviderRateLimited,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
    ProviderTimeout,
    Refused,
    Transient,
)

__all__ = ["BedrockProvider", "BedrockSettings"]

HEALTH_TIMEOUT_S = 5.0
NOVA = "amazon.nova-canvas-v1:0"
TITAN = "amazon.titan-image-generator-v2:0"
SD35 = "stability.sd3-5-large-v1:0"
ULTRA = "stability.stable-image-ultra-v1:1"
CORE = "stability.stable-image-core-v1:1"
AMAZON_MODELS = frozenset({NOVA, TITAN})
STABILITY_ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
NOVA_STYLES = frozenset(
    {
        "3D_ANIMATED_FAMILY_FILM",
        "DESIGN_SKETCH",
        "FLAT_VECTOR_ILLUSTRATION",
        "GRAPHIC_NOVEL_ILLUSTRATION",
        "MAXIMALISM",
        "MIDCENTURY_RETRO",
        "PHOTOREALISM",
        "SOFT_DIGITAL_PAINTING",
    }
)
NOVA_MIN_SIDE = 320
NOVA_MAX_SIDE = 4096
NOVA_STEP = 16
NOVA_MAX_N = 5
NOVA_MAX_TEXT = 1024
TITAN_MAX_TEXT = 512
#: Titan v2 sizes from the AWS docs (the full list is unconfirmed: PROVIDERS-2.md §3)
TITAN_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (768, 768),
    (512, 512),
    (1152, 768),
    (768, 1152),
    (1280, 768),
    (768, 1280),
    (1408, 768),
    (768, 1408),
    (1152, 896),
    (896, 1152),
)
#: Nova Canvas task types this adapter sends (``options["task"]`` picks one explicitly)
TASKS = ("TEXT_IMAGE", "IMAGE_VARIATION", "INPAINTING", "OUTPAINTING", "BACKGROUND_REMOVAL")
#: USD per image (PROVIDERS-2.md §3, *observed*; the AWS pricing page was not read)
NOVA_PRICES = {
    ("standard", 1024): Decimal("0.04"),
    ("premium", 1024): Decimal("0.06"),
    ("standard", 2048): Decimal("0.06"),
    ("premium", 2048): Decimal("0.08"),
}
PRICES_USD: dict[str, Decimal] = {
    NOVA: NOVA_PRICES[("standard", 1024)],
    TITAN: Decimal("0.008"),
    SD35: Decimal("0.08"),
    ULTRA: Decimal("0.14"),
    CORE: Decimal("0.04"),
}
_DESCRIPTIONS = {
    NOVA: "Amazon Nova Canvas: text-to-image, variation, inpainting, outpainting, "
    "background removal",
    TITAN: "Amazon Titan Image Generator v2",
    SD35: "Stable Diffusion 3.5 Large on Bedrock (text- and image-to-image)",
    ULTRA: "Stable Image Ultra on Bedrock",
    CORE: "Stable Image Core on Bedrock",
}
#: error names (``x-amzn-ErrorType``) by meaning; see botocore's bedrock-runtime model
_THROTTLED = frozenset(
    {"ThrottlingException", "ModelNotReadyException", "ServiceQuotaExceededException"}
)
_AUTH = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
    }
)
_CONTENT_FILTER = ("content filter", "responsible ai policy", "aup")


class BedrockSettings(ProviderSettings):
    """Settings of a ``bedrock`` instance; ``api_key`` is a Bedrock API key (bearer)."""

    #: AWS region; unset: the chain's region (``AWS_REGION``, profile), else us-east-1
    region: str | None = None
    #: named profile of the shared AWS config (SSO, assume-role, ...)
    profile: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    #: control-plane endpoint for the health check; unset: ``base_url``, else AWS's
    control_base_url: str | None = None
    #: Nova Canvas / Titan ``quality``
    quality: Literal["standard", "premium"] = "standard"
    cfg_scale: float | None = None
    #: Stability SD3.5 image-to-image ``strength`` (0-1) when the request has none
    image_strength: float = 0.7


class _StabilityResponse(BaseModel):
    images: list[str] = []
    seeds: list[int | None] = []
    finish_reasons: list[str | None] = []


class _AmazonResponse(BaseModel):
    images: list[str] = []
    error: str | None = None


class BedrockProvider(Provider):
    """Image models on AWS Bedrock through ``POST /model/{modelId}/invoke``.

    Nova Canvas picks its task from the inputs: an ``edit_image`` with a mask is
    inpainting (the mask's transparent pixels become the black area Nova changes),
    an ``edit_image`` or ``reference_image`` alone is a variation;
    ``options["task"]`` asks for ``OUTPAINTING`` or ``BACKGROUND_REMOVAL``
    explicitly, and ``options["mask_prompt"]`` names the area in words instead of
    a mask. Titan v2 takes the same tasks but no style. Stability models make one
    image per call; SD3.5 Large also does image-to-image.
    """

    kind: ClassVar[str] = "bedrock"
    settings_class: ClassVar[type[ProviderSettings]] = BedrockSettings
    key_env: ClassVar[str | None] = "AWS_BEARER_TOKEN_BEDROCK"
    needs_key: ClassVar[bool] = False

    settings: BedrockSettings

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if not isinstance(settings, BedrockSettings):
            settings = BedrockSettings.model_validate(settings.model_dump())
        super().__init__(name, settings, http)
        #: the Bedrock API key, explicit keys or the AWS chain; SigV4 signing
        self._aws = AwsAuth(name, settings)

    @property
    def models(self) -> dict[str, ModelInfo]:
        amazon = Capabilities(
            edit=True,
            mask=True,
            reference_image=True,
            negative_prompt=True,
            seed=True,
            max_n=NOVA_MAX_N,
            output_formats=("png",),
            max_width=NOVA_MAX_SIDE,
            max_height=NOVA_MAX_SIDE,
        )
        stability = Capabilities(
            negative_prompt=True,
            seed=True,
            aspect_ratios=STABILITY_ASPECT_RATIOS,
            output_formats=("png", "jpeg"),
            max_width=1536,
            max_height=1536,
        )
        caps = {
            NOVA: amazon,
            TITAN: replace(amazon, sizes=TITAN_SIZES, max_width=1408, max_height=1408),
            SD35: replace(stability, edit=True, reference_image=True),
            ULTRA: stability,
            CORE: stability,
        }
        return {
            name: ModelInfo(
                name=name,
                capabilities=caps[name],
                price_usd=price,
                description=_DESCRIPTIONS[name],
            )
            for name, price in PRICES_USD.items()
        }

    @property
    def default_model(self) -> str:
        return self.settings.default_model or NOVA

    @property
    def configured(self) -> bool:
        """Enabled, and a key, explicit credentials, a profile or a region is set."""
        s = self.settings
        return s.enabled and bool(s.api_key or s.aws_access_key_id or s.profile or s.region)

    def price(self, request: ProviderRequest) -> Decimal:
        model = request.model or self.default_model
        if model == NOVA:
            tier = 1024 if request.width * request.height <= 1024 * 1024 else 2048
            return NOVA_PRICES[(self.settings.quality, tier)] * request.n
        return super().price(request)

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model = request.model or self.default_model
        info = self.model_info(model)
        n = request.n
        if not 1 <= n <= info.capabilities.max_n:
            raise InvalidRequest(
                f"{self.name}: {model} makes 1 to {info.capabilities.max_n} images per request",
                provider=self.name,
            )
        metadata: dict[str, Any]
        if model in AMAZON_MODELS:
            body, task = await self._amazon_body(model, request)
            images = self._amazon_images(await self._invoke(model, body))
            metadata = {"task": task}
        else:
            body = self._stability_body(model, request)
            images = self._stability_images(await self._invoke(model, body))
            metadata = {"aspect_ratio": body.get("aspect_ratio")}
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=self.price(_with(request, model, len(images))),
            metadata={k: v for k, v in metadata.items() if v is not None},
        )

    async def health(self) -> Health:
        """GetFoundationModel for the default model on the control plane (nothing is made)."""
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        started = time.monotonic()
        model = self.default_model
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                auth = await self._aws.auth()
                base = self.settings.control_base_url or self.settings.base_url
                base = (base or f"https://bedrock.{auth.region}.amazonaws.com").rstrip("/")
                url = f"{base}/foundation-models/{quote(model, safe='')}"
                response = await self._send("GET", url, b"", auth, HEALTH_TIMEOUT_S)
        except ProviderAuthError as exc:
            return Health(healthy=False, status="auth_failed", detail=exc.message)
        except ProviderError as exc:
            return Health(healthy=False, status="unreachable", detail=exc.message)
        except TimeoutError:
            return Health(healthy=False, status="unreachable", detail="health check timed out")
        latency = (time.monotonic() - started) * 1000
        if response.status_code >= 400:
            error = self._error(response)
            status = "auth_failed" if isinstance(error, ProviderAuthError) else "degraded"
            return Health(healthy=False, status=status, detail=error.message, latency_ms=latency)
        return Health(healthy=True, latency_ms=latency)

    # --- request bodies -------------------------------------------------------------

    async def _amazon_body(
        self, model: str, request: ProviderRequest
    ) -> tuple[dict[str, Any], str]:
        task = self._task(request)
        limit = NOVA_MAX_TEXT if model == NOVA else TITAN_MAX_TEXT
        text = request.prompt[:limit]
        negative = (request.negative_prompt or "")[:limit] or None
        image = request.edit_image if request.edit_image is not None else request.reference_image
        options = request.options
        params: dict[str, Any]
        if task == "TEXT_IMAGE":
            params = {"text": text, "negativeText": negative}
            style = (request.style or "").upper()
            if model == NOVA and style in NOVA_STYLES:
                params["style"] = style
            key = "textToImageParams"
        elif task == "IMAGE_VARIATION":
            params = {
                "images": [_b64(_need(image, self.name, task))],
                "text": text,
                "negativeText": negative,
                "similarityStrength": options.get("similarity_strength"),
            }
            key = "imageVariationParams"
        elif task == "BACKGROUND_REMOVAL":
            body = {
                "taskType": task,
                "backgroundRemovalParams": {
                    "image": _b64(_need(request.edit_image, self.name, task))
                },
            }
            return body, task
        else:
            params = {
                "image": _b64(_need(request.edit_image, self.name, task)),
                "text": text,
                "negativeText": negative,
            }
            if request.mask is not None:
                # pixelgate masks: transparent = change; Nova: black (inpainting) or
                # white (outpainting) = change, pure black and white, no alpha
                params["maskImage"] = _b64(
                    await asyncio.to_thread(_nova_mask, request.mask, task == "OUTPAINTING")
                )
            elif options.get("mask_prompt"):
                params["maskPrompt"] = str(options["mask_prompt"])
            else:
                raise InvalidRequest(
                    f"{self.name}: {task.lower()} needs a mask or options.mask_prompt",
                    provider=self.name,
                )
            if task == "OUTPAINTING" and options.get("outpainting_mode"):
                params["outPaintingMode"] = str(options["outpainting_mode"]).upper()
            key = "inPaintingParams" if task == "INPAINTING" else "outPaintingParams"
        body = {
            "taskType": task,
            key: {k: v for k, v in params.items() if v is not None},
            "imageGenerationConfig": self._generation_config(model, request),
        }
        return body, task

    def _task(self, request: ProviderRequest) -> str:
        asked = request.options.get("task")
        if asked is not None:
            task = str(asked).upper()
            if task not in TASKS:
                raise InvalidRequest(
                    f"{self.name}: options.task must be one of {', '.join(TASKS)}",
                    provider=self.name,
                )
            return task
        if request.edit_image is not None and (
            request.mask is not None or request.options.get("mask_prompt")
        ):
            return "INPAINTING"
        if request.edit_image is not None or request.reference_image is not None:
            return "IMAGE_VARIATION"
        return "TEXT_IMAGE"

    def _generation_config(self, model: str, request: ProviderRequest) -> dict[str, Any]:
        if model == TITAN:
            width, height = _nearest_size(TITAN_SIZES, request.width, request.height)
        else:
            width, height = _nova_side(request.width), _nova_side(request.height)
        config: dict[str, Any] = {
            "numberOfImages": request.n,
            "width": width,
            "height": height,
            "quality": self.settings.quality,
        }
        if self.settings.cfg_scale is not None:
            config["cfgScale"] = self.settings.cfg_scale
        if request.seed is not None:
            config["seed"] = request.seed
        return config

    def _stability_body(self, model: str, request: ProviderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": request.prompt}
        image = request.edit_image if request.edit_image is not None else request.reference_image
        if image is not None:
            if model != SD35:
                raise InvalidRequest(
                    f"{self.name}: {model} takes no input image", provider=self.name
                )
            strength = request.options.get("strength", self.settings.image_strength)
            body.update(mode="image-to-image", image=_b64(image), strength=float(strength))
        else:
            body["aspect_ratio"] = nearest_aspect_ratio(
                STABILITY_ASPECT_RATIOS, request.width, request.height, request.aspect_ratio
            )
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            body["seed"] = request.seed
        if request.format == "jpeg":
            body["output_format"] = "jpeg"
        return body

    # --- responses ------------------------------------------------------------------

    def _amazon_images(self, data: bytes) -> list[ProviderImage]:
        try:
            parsed = _AmazonResponse.model_validate_json(data)
        except ValidationError:
            raise Transient(f"{self.name}: malformed response body", provider=self.name) from None
        if not parsed.images:
            reason = parsed.error or "no image returned"
            if any(p in reason.lower() for p in _CONTENT_FILTER):
                raise Refused(f"{self.name}: refused: {reason}", provider=self.name)
            raise Transient(f"{self.name}: {reason}", provider=self.name)
        return [
            ProviderImage(data=self._decode(item), content_type=_sniff(item))
            for item in parsed.images
        ]

    def _stability_images(self, data: bytes) -> list[ProviderImage]:
        try:
            parsed = _StabilityResponse.model_validate_json(data)
        except ValidationError:
            raise Transient(f"{self.name}: malformed response body", provider=self.name) from None
        reasons = [r for r in parsed.finish_reasons if r]
        if not parsed.images or reasons:
            reason = "; ".join(reasons) or "no image returned"
            if any(r.lower().startswith("filter reason") for r in reasons):
                raise Refused(f"{self.name}: refused: {reason}", provider=self.name)
            raise Transient(f"{self.name}: {reason}", provider=self.name)
        seeds = parsed.seeds + [None] * len(parsed.images)
        return [
            ProviderImage(data=self._decode(item), content_type=_sniff(item), seed=seed)
            for item, seed in zip(parsed.images, seeds, strict=False)
        ]

    def _decode(self, data: str) -> bytes:
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise Transient(f"{self.name}: image is not valid base64", provider=self.name) from None
        if not raw:
            raise Transient(f"{self.name}: empty image", provider=self.name)
        return raw

    # --- transport ------------------------------------------------------------------

    async def _invoke(self, model: str, body: dict[str, Any]) -> bytes:
        limit = self.settings.timeout_s
        payload = json.dumps(body, separators=(",", ":")).encode()
        try:
            async with asyncio.timeout(limit):
                auth = await self._aws.auth()
                base = (
                    self.settings.base_url or f"https://bedrock-runtime.{auth.region}.amazonaws.com"
                )
                # the model id is URL-encoded in the path (``:`` becomes %3A), as botocore does
                url = f"{base.rstrip('/')}/model/{quote(model, safe='')}/invoke"
                response = await self._send("POST", url, payload, auth, limit)
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no answer within {limit:g} s", provider=self.name
            ) from None
        if response.status_code >= 400:
            raise self._error(response)
        return response.content

    async def _send(
        self, method: str, url: str, payload: bytes, auth: Auth, limit: float
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth.bearer is not None:
            headers["Authorization"] = f"Bearer {auth.bearer}"
        else:
            headers = sign(method, url, payload, headers, auth)
        return await _http.request(
            self.http,
            self.name,
            method,
            url,
            timeout=limit,
            headers=headers,
            content=payload or None,
        )

    def _error(self, response: httpx.Response) -> ProviderError:
        """Map a Bedrock error (``x-amzn-ErrorType`` + ``{"message"}``) onto the taxonomy."""
        status = response.status_code
        name, text = _error_name(response)
        message = f"{self.name}: HTTP {status}{f' {name}' if name else ''}: {text}"
        kwargs: dict[str, Any] = {"provider": self.name, "status_code": status}
        if name in _THROTTLED:
            return ProviderRateLimited(
                message, retry_after=_http.parse_retry_after(response.headers), **kwargs
            )
        if name in _AUTH:
            return ProviderAuthError(message, **kwargs)
        if name == "ValidationException":
            if any(p in text.lower() for p in _CONTENT_FILTER):
                return Refused(message, **kwargs)
            return InvalidRequest(message, **kwargs)
        if name == "ResourceNotFoundException":
            return InvalidRequest(message, **kwargs)
        if name == "ModelTimeoutException":
            return ProviderTimeout(message, **kwargs)
        if name == "ModelErrorException":
            return Transient(message, **kwargs)
        base = _http.error_for_status(self.name, response)
        return type(base)(message, retry_after=base.retry_after, **kwargs)


def _error_name(response: httpx.Response) -> tuple[str | None, str]:
    """botocore's rest-json rule: the name is ``x-amzn-ErrorType`` up to ``:``, else the
    body's ``__type``/``code``; the message is the body's ``message``."""
    name = response.headers.get("x-amzn-errortype", "").split(":", 1)[0] or None
    text = response.text[:500] or response.reason_phrase
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if name is None:
            raw = body.get("__type") or body.get("code")
            name = str(raw).rsplit("#", 1)[-1] if raw else None
        message = body.get("message") or body.get("Message")
        if message:
            text = str(message)[:500]
    return name, text


def _need(image: bytes | None, provider: str, task: str) -> bytes:
    if image is None:
        raise InvalidRequest(f"{provider}: {task.lower()} needs an input image", provider=provider)
    return image


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _nova_side(value: int) -> int:
    stepped = round(value / NOVA_STEP) * NOVA_STEP
    return min(NOVA_MAX_SIDE, max(NOVA_MIN_SIDE, stepped))


def _nearest_size(sizes: tuple[tuple[int, int], ...], width: int, height: int) -> tuple[int, int]:
    """The listed size closest in aspect ratio, then in area."""
    target = math.log(max(width, 1) / max(height, 1))
    area = max(width * height, 1)
    return min(
        sizes,
        key=lambda s: (
            round(abs(math.log(s[0] / s[1]) - target), 2),
            abs(math.log(s[0] * s[1] / area)),
        ),
    )


def _nova_mask(mask: bytes, outpainting: bool) -> bytes:
    """pixelgate's mask (transparent = change) as Nova's black-and-white PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(mask)) as img:
        alpha = img.convert("RGBA").getchannel("A")
    change, keep = (255, 0) if outpainting else (0, 255)
    out = alpha.point(lambda a: change if a == 0 else keep).convert("RGB")
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def _sniff(data: str) -> str:
    if data.startswith("/9j/"):
        return "image/jpeg"
    if data.startswith("UklGR"):
        return "image/webp"
    return "image/png"


def _with(request: ProviderRequest, model: str, n: int) -> ProviderRequest:
    return replace(request, model=model, n=max(n, 1))
