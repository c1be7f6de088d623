"""fal.ai adapter: the queue API (submit, status, result, cancel) or the sync endpoint.

Wire protocol: PROVIDERS.md §6. In queue mode the submit response's
``status_url``/``response_url``/``cancel_url`` are used as given, because for a
sub-path app (``fal-ai/flux/schnell``) they drop the sub path. The saved provider
job id is the response URL's path (``fal-ai/flux/requests/<id>``), which is all a
restarted worker (or :meth:`FalProvider.cancel`) needs to rebuild the three URLs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import BaseModel, Field

from pixelgate.providers._http import call, error_body, error_for_status, parse
from pixelgate.providers._jobs import (
    JobRun,
    Pending,
    PollingJob,
    Submitted,
    cancel_quietly,
    run_polling_job,
)
from pixelgate.providers._setup import TableModel, TableProvider, TableSettings, merge_input
from pixelgate.providers._shapes import decode_data_uri, nearest_aspect_ratio
from pixelgate.providers.base import (
    InvalidRequest,
    JobContext,
    ModelInfo,
    ProviderError,
    ProviderImage,
    ProviderRequest,
    ProviderResult,
    Refused,
    Transient,
)

__all__ = ["FalModel", "FalProvider", "FalSettings"]

log = structlog.get_logger(__name__)

DEFAULT_SYNC_BASE_URL = "https://fal.run"
MEGAPIXEL = 1024 * 1024
_REFUSAL = re.compile(r"content.?policy|nsfw|safety|unsafe|moderat|prohibited", re.IGNORECASE)
#: app ids whose namespace prefix is part of the app root (PROVIDERS.md §6)
_NAMESPACES = ("workflows", "comfy")

NANO_BANANA_RATIOS = ("21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16")

InputStyle = Literal["generic", "flux", "nano_banana"]


class FalModel(TableModel):
    """One fal app offered by an instance (built in or from ``[providers.X.models]``)."""

    #: the price is per megapixel of output rather than per image
    per_megapixel: bool = False
    input_style: InputStyle = "generic"


class FalSettings(TableSettings):
    """Settings of a ``kind = "fal"`` instance; ``base_url`` is the queue host."""

    kind: str = "fal"
    mode: Literal["queue", "sync"] = "queue"
    sync_base_url: str | None = None
    #: ask the status endpoint for logs (their last line becomes the progress message)
    logs: bool = True
    #: extra or overriding apps by id; with ``allow_any_model``, any ``owner/alias[/path]``
    models: dict[str, FalModel] = Field(default_factory=dict)


# Prices, PROVIDERS.md §6 (fal-client snapshot 2026-08; unconfirmed dated hints):
# flux/schnell about $0.003 per megapixel, nano-banana about $0.039 per image;
# flux/dev $0.025 per megapixel from fal.ai/models (2026-08, unconfirmed).
BUILTIN_MODELS: dict[str, FalModel] = {
    "fal-ai/flux/schnell": FalModel(
        price_usd=Decimal("0.003"),
        per_megapixel=True,
        input_style="flux",
        max_n=4,
        output_formats=("png", "jpeg"),
        seed=True,
        description="FLUX.1 [schnell]",
    ),
    "fal-ai/flux/dev": FalModel(
        price_usd=Decimal("0.025"),
        per_megapixel=True,
        input_style="flux",
        max_n=4,
        output_formats=("png", "jpeg"),
        seed=True,
        description="FLUX.1 [dev]",
    ),
    "fal-ai/nano-banana": FalModel(
        price_usd=Decimal("0.039"),
        input_style="nano_banana",
        aspect_ratios=NANO_BANANA_RATIOS,
        max_n=4,
        output_formats=("png", "jpeg", "webp"),
        seed=True,
        description="Gemini 2.5 Flash Image",
    ),
}


class _Submitted(BaseModel):
    request_id: str
    response_url: str | None = None
    status_url: str | None = None
    cancel_url: str | None = None


class _Log(BaseModel):
    message: str = ""


class _Status(BaseModel):
    status: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    queue_position: int | None = None
    logs: list[_Log] | None = None
    error: str | None = None
    error_type: str | None = None


class _Image(BaseModel):
    url: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None


class _Result(BaseModel):
    images: list[_Image]
    seed: int | None = None
    has_nsfw_concepts: list[bool] | None = None
    description: str | None = None


class _ValidationItem(BaseModel):
    loc: list[str | int] = Field(default_factory=list)
    msg: str = ""
    type: str = ""


class _ErrorBody(BaseModel):
    detail: str | list[_ValidationItem] | None = None
    error_type: str | None = None


@dataclass
class _Urls:
    status: str
    response: str
    cancel: str


class FalProvider(TableProvider[FalModel]):
    """fal.ai apps through the queue (default, resumable) or the synchronous host."""

    kind = "fal"
    settings_class = FalSettings
    key_env = "FAL_KEY"
    default_base_url = "https://queue.fal.run"

    settings: FalSettings

    def price(self, request: ProviderRequest) -> Decimal:
        spec = self._spec(request.model or self.default_model)
        return _unit_price(spec, request.width, request.height) * request.n

    @property
    def sync_base_url(self) -> str:
        return (self.settings.sync_base_url or DEFAULT_SYNC_BASE_URL).rstrip("/")

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        model = request.model or self.default_model
        spec = self._spec(model)
        if self.settings.mode == "sync" and not ctx.provider_job_id:
            return await self._run_job(lambda: self._sync(model, spec, request), lambda: None)
        return await run_polling_job(self, ctx, _Queued(self, model, spec, request))

    async def cancel(self, provider_job_id: str) -> None:
        """Best-effort ``PUT …/requests/{id}/cancel``; never raises."""
        url = self._urls_for(provider_job_id).cancel
        await cancel_quietly(self.name, provider_job_id, lambda: self._call("PUT", url))

    # -- internals -----------------------------------------------------------------

    def _table(self) -> dict[str, FalModel]:
        return {**BUILTIN_MODELS, **self.settings.models}

    def _generic(self, name: str) -> FalModel | None:
        parts = name.split("/")
        if len(parts) >= 2 and all(parts):
            return FalModel(price_usd=self.settings.generic_price_usd)
        return None

    def _info(self, name: str, spec: FalModel) -> ModelInfo:
        return spec.info(name, _unit_price(spec, 1024, 1024))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.api_key()}"}

    async def _sync(self, model: str, spec: FalModel, request: ProviderRequest) -> ProviderResult:
        url = f"{self.sync_base_url}/{model}"
        response = await self._call("POST", url, json=_build_input(spec, request))
        return self._finish(model, spec, request, parse(self.name, _Result, response), None)

    def _urls_from(self, model: str, submitted: _Submitted) -> _Urls:
        """The URLs of the submit response when they point at our queue host."""
        fallback = self._urls_for(f"{_app_root(model)}/requests/{submitted.request_id}")
        return _Urls(
            status=self._same_host(submitted.status_url) or fallback.status,
            response=self._same_host(submitted.response_url) or fallback.response,
            cancel=self._same_host(submitted.cancel_url) or fallback.cancel,
        )

    def _same_host(self, url: str | None) -> str | None:
        # Our key is sent to these URLs: never to a host other than the queue's.
        if url and urlsplit(url).netloc == urlsplit(self.base_url).netloc:
            return url
        return None

    def _urls_for(self, job_id: str) -> _Urls:
        base = f"{self.base_url}/{job_id.strip('/')}"
        return _Urls(status=f"{base}/status", response=base, cancel=f"{base}/cancel")

    def _finish(
        self,
        model: str,
        spec: FalModel,
        request: ProviderRequest,
        result: _Result,
        job_id: str | None,
    ) -> ProviderResult:
        flags = result.has_nsfw_concepts or []
        # fal returns a black image in place of each flagged one: drop those.
        kept = [img for i, img in enumerate(result.images) if not (i < len(flags) and flags[i])]
        if not kept:
            if result.images:
                raise Refused(f"{self.name}: output flagged as NSFW", provider=self.name)
            raise Transient(f"{self.name}: result has no images", provider=self.name)
        images = [self._image(img, result.seed) for img in kept]
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=_unit_price(spec, request.width, request.height) * len(images),
            provider_job_id=job_id,
            metadata={"seed": result.seed} if result.seed is not None else {},
        )

    def _image(self, image: _Image, seed: int | None) -> ProviderImage:
        if image.url.startswith("data:"):
            data, content_type = decode_data_uri(self.name, image.url)
            content_type = content_type or image.content_type
            return ProviderImage(data=data, content_type=content_type, seed=seed)
        if not image.url.startswith(("https://", "http://")):
            raise Transient(f"{self.name}: image url is not a URL", provider=self.name)
        return ProviderImage(url=image.url, content_type=image.content_type, seed=seed)

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", self._headers())
        return await call(self.http, self.name, method, url, error=self._error, **kwargs)

    def _error(self, response: httpx.Response) -> ProviderError:
        body = error_body(_ErrorBody, response)
        error_type = body.error_type or response.headers.get("x-fal-error-type") or ""
        if isinstance(body.detail, list):
            messages = "; ".join(
                f"{'.'.join(str(p) for p in item.loc)}: {item.msg}" for item in body.detail
            )
            message = f"{self.name}: HTTP {response.status_code}: {messages[:500]}"
            refused = any(_REFUSAL.search(item.type) for item in body.detail)
            if refused or _REFUSAL.search(error_type):
                return Refused(message, provider=self.name, status_code=response.status_code)
            if response.status_code == 422:
                return InvalidRequest(message, provider=self.name, status_code=422)
        elif _REFUSAL.search(error_type) and response.status_code < 500:
            return Refused(
                f"{self.name}: HTTP {response.status_code}: {(body.detail or error_type)[:500]}",
                provider=self.name,
                status_code=response.status_code,
            )
        return error_for_status(self.name, response)


class _Queued(PollingJob[_Status]):
    """A queue request: submitted, its status polled (with logs), then its result fetched."""

    def __init__(
        self, provider: FalProvider, model: str, spec: FalModel, request: ProviderRequest
    ) -> None:
        self.provider = provider
        self.model = model
        self.spec = spec
        self.request = request
        self.urls: _Urls | None = None

    async def submit(self, run: JobRun) -> Submitted[_Status]:
        fal = self.provider
        url = f"{fal.base_url}/{self.model}"
        response = await fal._call("POST", url, json=_build_input(self.spec, self.request))
        self.urls = fal._urls_from(self.model, parse(fal.name, _Submitted, response))
        return Submitted(urlsplit(self.urls.response).path.strip("/"))

    def _urls(self, job_id: str) -> _Urls:
        return self.urls or self.provider._urls_for(job_id)

    async def poll(self, run: JobRun, job_id: str) -> _Status | Pending:
        fal = self.provider
        url = f"{self._urls(job_id).status}?logs={int(fal.settings.logs)}"
        status = parse(fal.name, _Status, await fal._call("GET", url))
        if status.status == "COMPLETED":
            return status
        if status.status == "IN_QUEUE":
            position = status.queue_position
            if position is None:
                return Pending(5, "queued")
            return Pending(max(1, 10 - position), f"queue position {position}")
        last = next((log.message for log in reversed(status.logs or []) if log.message), None)
        return Pending(50, last[:200] if last else "processing")

    async def result(self, run: JobRun, job_id: str, done: _Status) -> ProviderResult:
        fal = self.provider
        if done.error and _REFUSAL.search(f"{done.error} {done.error_type or ''}"):
            raise Refused(f"{fal.name}: {done.error[:500]}", provider=fal.name)
        response = await fal._call("GET", self._urls(job_id).response)
        result = parse(fal.name, _Result, response)
        return fal._finish(self.model, self.spec, self.request, result, job_id)


def _app_root(app: str) -> str:
    """``owner/alias`` of an app id (keeping a ``workflows/``/``comfy/`` namespace)."""
    parts = app.strip("/").split("/")
    keep = 3 if parts[0] in _NAMESPACES else 2
    return "/".join(parts[:keep])


def _unit_price(spec: FalModel, width: int, height: int) -> Decimal:
    if not spec.per_megapixel:
        return spec.price_usd
    megapixels = max(1, math.ceil(width * height / MEGAPIXEL))
    return spec.price_usd * megapixels


def _build_input(spec: FalModel, request: ProviderRequest) -> dict[str, Any]:
    data: dict[str, Any] = {"prompt": request.prompt}
    if spec.input_style == "flux":
        data.update(
            image_size={"width": request.width, "height": request.height},
            num_images=request.n,
            output_format="jpeg" if request.format == "jpeg" else "png",
            enable_safety_checker=True,
        )
    elif spec.input_style == "nano_banana":
        ratio = request.aspect_ratio
        if ratio not in spec.aspect_ratios:
            ratio = nearest_aspect_ratio(spec.aspect_ratios, request.width, request.height)
        data.update(aspect_ratio=ratio, num_images=request.n, output_format=request.format)
    elif request.n > 1:
        data["num_images"] = request.n
    if request.seed is not None and (spec.seed or spec.input_style == "generic"):
        data["seed"] = request.seed
    if request.negative_prompt and spec.negative_prompt:
        data["negative_prompt"] = request.negative_prompt
    merge_input(data, spec.input, request)
    return data
