"""Black Forest Labs adapter: FLUX models through BFL's own asynchronous API.

Wire protocol: PROVIDERS-2.md §4. ``POST {base}/v1/{model}`` with ``x-key`` answers
``{id, polling_url}``; ``GET {polling_url}`` (with ``x-key``) answers HTTP 200 whatever
the task's ``status`` (``Pending``, ``Ready``, ``Request Moderated``, ``Content
Moderated``, ``Error``, ``Task not found``). The polling URL may name another host
(``api.eu2.bfl.ai``): our key goes only to hosts in ``allowed_hosts`` (the BFL domains)
or ``base_url``'s host, and for any other the adapter polls ``{base}/v1/get_result?id=``
instead. The saved provider job id is the polling URL (or the bare id), so a restarted
worker polls on without a second submit. ``result.sample`` is a signed URL that
expires after 10 minutes, so it is downloaded here, at once, without the key.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import httpx
from pydantic import BaseModel, Field

from pixelgate.providers._http import call, download, error_body, error_for_status, parse
from pixelgate.providers._jobs import JobRun, Pending, PollingJob, Submitted, run_polling_job
from pixelgate.providers._setup import merge_input
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
    Refused,
    Transient,
)

__all__ = ["BFL_HOSTS", "BflProvider", "BflSettings"]

#: BFL's own domains: submit hosts (api.bfl.ai, api.eu.bfl.ai...), regional polling hosts
#: (api.eu2.bfl.ai, gateway.bfl.ai) and result hosts (delivery-eu1.bfl.ai); api.bfl.ml is
#: the legacy domain
BFL_HOSTS = ("bfl.ai", "bfl.ml")
HEALTH_TIMEOUT_S = 5.0
#: FLUX.1 sizes: 256-1440 px in steps of 32 (FluxPro11 / FluxDev schemas)
SIZE_STEP = 32
MIN_SIZE = 256
MAX_SIZE = 1440
MEGAPIXEL = 1_000_000
CREDIT_USD = Decimal("0.01")
#: FluxUltra / Kontext accept 21:9 to 9:21
WIDE_RATIOS = ("21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21")
MODERATED = frozenset({"Request Moderated", "Content Moderated"})
FAILED = frozenset({"Error", "Failed", "Task not found"})
OUTPUT_FORMATS = ("jpeg", "png", "webp")

Style = Literal["sized", "ratio", "kontext", "fill", "flux2"]


@dataclass(frozen=True)
class _Model:
    style: Style
    price_usd: Decimal
    description: str
    #: the price is per megapixel of output (FLUX.2)
    per_megapixel: bool = False


# Prices: docs.bfl.ai/quick_start/pricing (PROVIDERS-2.md §4, dated hints); flux-dev from
# LiteLLM and flux-pro (absent from the 2026-04 spec) are unconfirmed.
MODELS: dict[str, _Model] = {
    "flux-pro-1.1": _Model("sized", Decimal("0.04"), "FLUX1.1 [pro]"),
    "flux-pro-1.1-ultra": _Model("ratio", Decimal("0.06"), "FLUX1.1 [pro] Ultra (up to 4 MP)"),
    "flux-pro": _Model("sized", Decimal("0.05"), "FLUX.1 [pro] (legacy)"),
    "flux-dev": _Model("sized", Decimal("0.025"), "FLUX.1 [dev]"),
    "flux-kontext-pro": _Model("kontext", Decimal("0.04"), "FLUX.1 Kontext [pro]: edit"),
    "flux-kontext-max": _Model("kontext", Decimal("0.08"), "FLUX.1 Kontext [max]: edit"),
    "flux-pro-1.0-fill": _Model("fill", Decimal("0.05"), "FLUX.1 Fill [pro]: inpainting"),
    "flux-2-pro": _Model("flux2", Decimal("0.03"), "FLUX.2 [pro]", per_megapixel=True),
    "flux-2-flex": _Model("flux2", Decimal("0.05"), "FLUX.2 [flex]", per_megapixel=True),
    "flux-2-max": _Model("flux2", Decimal("0.07"), "FLUX.2 [max]", per_megapixel=True),
    "flux-2-klein-4b": _Model("flux2", Decimal("0.014"), "FLUX.2 [klein] 4B", per_megapixel=True),
    "flux-2-klein-9b": _Model("flux2", Decimal("0.015"), "FLUX.2 [klein] 9B", per_megapixel=True),
}


class BflSettings(ProviderSettings):
    """Settings of a ``kind = "bfl"`` instance; ``base_url`` is the submit host."""

    kind: str = "bfl"
    #: hosts (and their subdomains) our key may be sent to when polling, and results come
    #: from; ``base_url``'s host is always allowed
    allowed_hosts: list[str] = Field(default_factory=lambda: list(BFL_HOSTS))
    #: 0 (strict) to 6 (permissive); FLUX.2 takes at most 5
    safety_tolerance: int = Field(default=2, ge=0, le=6)
    prompt_upsampling: bool = False


class _Submitted(BaseModel):
    id: str
    polling_url: str | None = None
    #: credits (1 credit = $0.01); may be null
    cost: float | None = None


class _Sample(BaseModel):
    sample: str
    seed: int | None = None


class _Task(BaseModel):
    id: str | None = None
    status: str
    result: _Sample | dict[str, Any] | None = None
    progress: float | None = None
    details: dict[str, Any] | None = None


class _ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]] | None = None
    retry_after: float | None = None


class BflProvider(Provider):
    """FLUX text-to-image, Kontext editing and Fill inpainting, submitted and polled."""

    kind = "bfl"
    settings_class = BflSettings
    key_env = "BFL_API_KEY"
    default_base_url = "https://api.bfl.ai"

    settings: BflSettings

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {name: _info(name, spec) for name, spec in MODELS.items()}

    @property
    def default_model(self) -> str:
        return self.settings.default_model or "flux-pro-1.1"

    def price(self, request: ProviderRequest) -> Decimal:
        spec = self._spec(request.model)
        return _unit_price(spec, request.width, request.height) * request.n

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model = request.model or self.default_model
        spec = self._spec(model)
        body = {} if ctx.provider_job_id else _body(self.name, model, spec, request, self.settings)
        return await run_polling_job(self, ctx, _FluxTask(self, model, spec, request, body))

    async def health(self) -> Health:
        """``GET /v1/credits``: reachable, the key accepted, and the balance as detail."""
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        try:
            response = await self._call(
                "GET", f"{self.base_url}/v1/credits", timeout=HEALTH_TIMEOUT_S
            )
        except ProviderAuthError as exc:
            return Health(healthy=False, status="auth_failed", detail=exc.message)
        except ProviderError as exc:
            return Health(healthy=False, status="unreachable", detail=exc.message)
        credits = _credits(response)
        return Health(healthy=True, detail=None if credits is None else f"{credits:g} credits")

    # -- internals -----------------------------------------------------------------

    def _spec(self, model: str | None) -> _Model:
        self.model_info(model)
        return MODELS[model or self.default_model]

    def _headers(self) -> dict[str, str]:
        return {"x-key": self.api_key()}

    def allowed(self, url: str) -> bool:
        """Whether our key may go to ``url`` (and a result may come from it)."""
        parts, base = urlsplit(url), urlsplit(self.base_url)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" and not (parts.scheme == "http" == base.scheme):
            return False
        if host and host == (base.hostname or "").lower():
            return True
        return any(host == h or host.endswith(f".{h}") for h in self.settings.allowed_hosts)

    def _poll_url(self, job_id: str) -> str:
        if job_id.startswith(("https://", "http://")) and self.allowed(job_id):
            return job_id
        task_id = job_id.rpartition("id=")[2] if "://" in job_id else job_id
        return f"{self.base_url}/v1/get_result?{urlencode({'id': task_id})}"

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await call(
            self.http, self.name, method, url, headers=self._headers(), error=self._error, **kwargs
        )

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        body = error_body(_ErrorBody, response)
        if status == 422 and isinstance(body.detail, list):
            messages = "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', '')}"
                for item in body.detail
            )
            return InvalidRequest(
                f"{self.name}: HTTP 422: {messages[:500]}", provider=self.name, status_code=422
            )
        error = error_for_status(self.name, response)
        if isinstance(error, ProviderRateLimited) and error.retry_after is None:
            error.retry_after = body.retry_after
        if status == 402:  # out of credits: only a person can fix it
            return ProviderAuthError(error.message, provider=self.name, status_code=402)
        return error


class _FluxTask(PollingJob[_Sample]):
    """One BFL task: submitted, its polling URL polled, its sample downloaded at once."""

    def __init__(
        self,
        provider: BflProvider,
        model: str,
        spec: _Model,
        request: ProviderRequest,
        body: dict[str, Any],
    ) -> None:
        self.provider = provider
        self.model = model
        self.spec = spec
        self.request = request
        self.body = body
        self.cost: float | None = None

    async def submit(self, run: JobRun) -> Submitted[_Sample]:
        bfl = self.provider
        response = await bfl._call("POST", f"{bfl.base_url}/v1/{self.model}", json=self.body)
        submitted = parse(bfl.name, _Submitted, response)
        self.cost = submitted.cost
        url = submitted.polling_url
        return Submitted(url if url and bfl.allowed(url) else submitted.id)

    async def poll(self, run: JobRun, job_id: str) -> _Sample | Pending:
        bfl = self.provider
        task = parse(bfl.name, _Task, await bfl._call("GET", bfl._poll_url(job_id)))
        if task.status == "Ready":
            if not isinstance(task.result, _Sample):
                raise Transient(f"{bfl.name}: a ready task without a sample", provider=bfl.name)
            return task.result
        if task.status in MODERATED:
            reasons = (task.details or {}).get("Moderation Reasons")
            detail = f": {', '.join(map(str, reasons))}" if isinstance(reasons, list) else ""
            raise Refused(f"{bfl.name}: {task.status}{detail}"[:500], provider=bfl.name)
        if task.status in FAILED:
            raise Transient(f"{bfl.name}: task {task.status.lower()}", provider=bfl.name)
        if task.progress is None:
            return Pending(5, "pending")
        fraction = task.progress / 100 if task.progress > 1 else task.progress
        return Pending(10 + int(85 * min(1.0, max(0.0, fraction))), "generating")

    async def result(self, run: JobRun, job_id: str, done: _Sample) -> ProviderResult:
        bfl = self.provider
        if not bfl.allowed(done.sample):
            raise Transient(f"{bfl.name}: result URL on an unexpected host", provider=bfl.name)
        # The signed URL expires after 10 minutes and needs no key: fetch it now, bare.
        data, content_type = await download(bfl.http, bfl.name, done.sample)
        cost = (
            Decimal(str(self.cost)) * CREDIT_USD
            if self.cost is not None
            else _unit_price(self.spec, self.request.width, self.request.height)
        )
        return ProviderResult(
            images=[ProviderImage(data=data, content_type=content_type, seed=done.seed)],
            model=self.model,
            cost_usd=cost,
            provider_job_id=job_id,
            metadata={"seed": done.seed} if done.seed is not None else {},
        )


def _info(name: str, spec: _Model) -> ModelInfo:
    sized = spec.style in ("sized", "flux2")
    caps = Capabilities(
        edit=spec.style in ("kontext", "fill", "flux2"),
        mask=spec.style == "fill",
        reference_image=spec.style in ("sized", "ratio"),
        seed=True,
        aspect_ratios=WIDE_RATIOS if spec.style in ("ratio", "kontext") else (),
        output_formats=OUTPUT_FORMATS,
        max_width=MAX_SIZE if spec.style == "sized" else 4096,
        max_height=MAX_SIZE if spec.style == "sized" else 4096,
    )
    price = _unit_price(spec, 1024, 1024) if sized else spec.price_usd
    return ModelInfo(name, caps, price, spec.description)


def _unit_price(spec: _Model, width: int, height: int) -> Decimal:
    if not spec.per_megapixel:
        return spec.price_usd
    return spec.price_usd * max(1, math.ceil(width * height / MEGAPIXEL))


def _size(value: int) -> int:
    return max(MIN_SIZE, min(MAX_SIZE, round(value / SIZE_STEP) * SIZE_STEP))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _body(
    provider: str, model: str, spec: _Model, request: ProviderRequest, settings: BflSettings
) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": request.prompt, "output_format": request.format}
    tolerance = settings.safety_tolerance
    style = spec.style
    if style == "sized":
        body.update(width=_size(request.width), height=_size(request.height))
    elif style == "flux2":
        body.update(width=request.width, height=request.height)
        tolerance = min(tolerance, 5)
    elif style in ("ratio", "kontext"):
        body["aspect_ratio"] = nearest_aspect_ratio(
            WIDE_RATIOS, request.width, request.height, request.aspect_ratio
        )
    if style in ("kontext", "flux2") and request.edit_image is not None:
        body["input_image"] = _b64(request.edit_image)
    if style == "fill":
        if request.edit_image is None:
            raise InvalidRequest(
                f"{provider}: {model} inpaints an image: send one", provider=provider
            )
        body["image"] = _b64(request.edit_image)
        if request.mask is not None:
            body["mask"] = _b64(request.mask)
    if style in ("sized", "ratio") and request.reference_image is not None:
        body["image_prompt"] = _b64(request.reference_image)
    if request.seed is not None:
        body["seed"] = request.seed
    if style != "flux2":
        body["prompt_upsampling"] = settings.prompt_upsampling
    body["safety_tolerance"] = tolerance
    merge_input(body, {}, request)
    return body


def _credits(response: httpx.Response) -> float | None:
    try:
        value = response.json().get("credits")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None
