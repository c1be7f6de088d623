"""Replicate adapter: asynchronous predictions on any public model or version.

Wire protocol: PROVIDERS.md §5. A prediction is created with ``Prefer: wait`` (the
request may already hold the output), its id is saved for resume, then
``GET /predictions/{id}`` is polled until a terminal status. Output URLs are
returned as-is (``replicate.delivery`` needs no auth); the pipeline downloads them.
"""

from __future__ import annotations

import contextlib
import math
import re
from decimal import Decimal
from typing import Any, Literal

import httpx
import structlog
from pydantic import BaseModel, Field, ValidationError

from pixelgate.providers._http import call, error_for_status, parse
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
    ProviderAuthError,
    ProviderError,
    ProviderImage,
    ProviderRateLimited,
    ProviderRequest,
    ProviderResult,
    Refused,
    Transient,
)

__all__ = ["ReplicateModel", "ReplicateProvider", "ReplicateSettings"]

log = structlog.get_logger(__name__)

MAX_WAIT_S = 60
#: headroom on top of ``Prefer: wait`` for the create call's HTTP timeout
WAIT_HEADROOM_S = 10.0
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
#: failure texts that mean a safety/policy refusal (the wording is model-specific)
_REFUSAL = re.compile(
    r"nsfw|safety|unsafe|sensitive|flagged|content polic|moderat|inappropriate|prohibited",
    re.IGNORECASE,
)
_INVALID = re.compile(
    r"invalid|validation|must be|not a valid|unexpected|is required|out of range",
    re.IGNORECASE,
)
_LOG_PERCENT = re.compile(r"(\d{1,3})%\|")
_HEX_VERSION = re.compile(r"^[0-9a-f]{64}$")

#: Replicate's own aspect-ratio list for FLUX (PROVIDERS.md §5 "Model inputs")
FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
#: presumably Gemini's list (PROVIDERS.md §2); unconfirmed for Replicate's mirror
NANO_BANANA_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IDEOGRAM_V2_RATIOS = (
    "1:1",
    "16:9",
    "9:16",
    "4:3",
    "3:4",
    "3:2",
    "2:3",
    "16:10",
    "10:16",
    "3:1",
    "1:3",
)
IDEOGRAM_V3_RATIOS = (
    "1:3", "3:1", "1:2", "2:1", "9:16", "16:9", "10:16", "16:10",
    "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "1:1",
)  # fmt: skip
FLUX_PRO_RATIOS = ("1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")

InputStyle = Literal["generic", "flux_schnell", "flux_pro", "nano_banana", "ideogram"]


class ReplicateModel(TableModel):
    """One model offered by a Replicate instance (built in or from ``[providers.X.models]``)."""

    #: ``owner/name:<64-hex>`` or ``<64-hex>`` to pin a version (POST /predictions)
    version: str | None = None
    #: how pixelgate's request fields are translated into the model's input
    input_style: InputStyle = "generic"


class ReplicateSettings(TableSettings):
    """Settings of a ``kind = "replicate"`` instance."""

    kind: str = "replicate"
    #: seconds for ``Prefer: wait=N`` on create (0 disables sync mode; max 60 per the API)
    wait_s: int = Field(default=MAX_WAIT_S, ge=0, le=MAX_WAIT_S)
    #: server-side deadline header (``Cancel-After: 5m``), unset by default
    cancel_after: str | None = None
    #: extra or overriding models by name; with ``allow_any_model``, any ``owner/name``
    #: (or version) model string
    models: dict[str, ReplicateModel] = Field(default_factory=dict)


# Prices per output image, PROVIDERS.md §5 and replicate.com model pages as of 2026-08
# (unconfirmed, dated hints): flux-schnell $0.003, nano-banana $0.039, ideogram v3 turbo
# $0.03; flux-1.1-pro $0.04 and ideogram-v2 $0.08 from the model pages (unconfirmed).
BUILTIN_MODELS: dict[str, ReplicateModel] = {
    "black-forest-labs/flux-schnell": ReplicateModel(
        price_usd=Decimal("0.003"),
        input_style="flux_schnell",
        aspect_ratios=FLUX_RATIOS,
        max_n=4,
        output_formats=("png", "jpeg", "webp"),
        seed=True,
        description="FLUX.1 [schnell], 1-4 step distilled model",
    ),
    "google/nano-banana": ReplicateModel(
        price_usd=Decimal("0.039"),
        input_style="nano_banana",
        aspect_ratios=NANO_BANANA_RATIOS,
        output_formats=("png", "jpeg"),
        description="Gemini 2.5 Flash Image",
    ),
    "black-forest-labs/flux-1.1-pro": ReplicateModel(
        price_usd=Decimal("0.04"),
        input_style="flux_pro",
        aspect_ratios=FLUX_PRO_RATIOS,
        output_formats=("png", "jpeg", "webp"),
        seed=True,
        description="FLUX1.1 [pro]",
    ),
    "ideogram-ai/ideogram-v2": ReplicateModel(
        price_usd=Decimal("0.08"),
        input_style="ideogram",
        aspect_ratios=IDEOGRAM_V2_RATIOS,
        seed=True,
        negative_prompt=True,
        description="Ideogram 2.0 (good at text in images)",
    ),
    "ideogram-ai/ideogram-v3-turbo": ReplicateModel(
        price_usd=Decimal("0.03"),
        input_style="ideogram",
        aspect_ratios=IDEOGRAM_V3_RATIOS,
        seed=True,
        description="Ideogram 3.0 turbo",
    ),
}


class _Prediction(BaseModel):
    id: str
    status: Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
    output: str | list[str] | None = None
    error: str | None = None
    logs: str | None = None
    data_removed: bool = False
    model: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class _ErrorBody(BaseModel):
    detail: str | None = None
    retry_after: float | None = None


class ReplicateProvider(TableProvider[ReplicateModel]):
    """Replicate predictions: built-in model table plus any ``owner/name`` or version."""

    kind = "replicate"
    settings_class = ReplicateSettings
    key_env = "REPLICATE_API_TOKEN"
    default_base_url = "https://api.replicate.com/v1"

    settings: ReplicateSettings

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        return await run_polling_job(self, ctx, _Predict(self, request))

    async def cancel(self, provider_job_id: str) -> None:
        """Best-effort ``POST /predictions/{id}/cancel``; never raises."""
        url = f"{self.base_url}/predictions/{provider_job_id}/cancel"
        await cancel_quietly(self.name, provider_job_id, lambda: self._call("POST", url))

    # -- internals -----------------------------------------------------------------

    def _table(self) -> dict[str, ReplicateModel]:
        return {**BUILTIN_MODELS, **self.settings.models}

    def _generic(self, name: str) -> ReplicateModel | None:
        if not _is_model_ref(name):
            return None
        version = name if (":" in name or _HEX_VERSION.match(name)) else None
        return ReplicateModel(version=version, price_usd=self.settings.generic_price_usd)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key()}"}

    async def _create(
        self, model: str, spec: ReplicateModel, request: ProviderRequest
    ) -> _Prediction:
        body: dict[str, Any] = {"input": _build_input(spec, request)}
        if spec.version:
            url = f"{self.base_url}/predictions"
            body["version"] = spec.version
        else:
            owner, _, name = model.partition("/")
            url = f"{self.base_url}/models/{owner}/{name}/predictions"
        headers = self._headers()
        wait = min(self.settings.wait_s, math.floor(self.settings.timeout_s) - 1)
        if wait >= 1:
            headers["Prefer"] = f"wait={wait}"
        if self.settings.cancel_after:
            headers["Cancel-After"] = self.settings.cancel_after
        response = await self._call(
            "POST", url, headers=headers, json=body, timeout=max(wait, 0) + WAIT_HEADROOM_S
        )
        return parse(self.name, _Prediction, response)

    async def _get(self, prediction_id: str) -> _Prediction:
        url = f"{self.base_url}/predictions/{prediction_id}"
        return parse(self.name, _Prediction, await self._call("GET", url))

    def _finish(self, model: str, spec: ReplicateModel, prediction: _Prediction) -> ProviderResult:
        if prediction.status == "failed":
            raise self._failure(prediction.error or "prediction failed")
        if prediction.status == "canceled":
            raise InvalidRequest(
                f"{self.name}: prediction {prediction.id} was canceled",
                provider=self.name,
                code="provider_canceled",
            )
        if prediction.status == "aborted":
            raise Transient(
                f"{self.name}: prediction {prediction.id} was aborted before it started",
                provider=self.name,
            )
        outputs = [prediction.output] if isinstance(prediction.output, str) else prediction.output
        if not outputs:
            detail = (
                "output was removed (older than 1 h)" if prediction.data_removed else "no output"
            )
            raise Transient(
                f"{self.name}: prediction {prediction.id}: {detail}", provider=self.name
            )
        images = [self._image(item) for item in outputs]
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=spec.price_usd * len(images),
            provider_job_id=prediction.id,
            metadata={"prediction_id": prediction.id, "metrics": prediction.metrics},
        )

    def _image(self, output: str) -> ProviderImage:
        if output.startswith("data:"):
            data, content_type = decode_data_uri(self.name, output)
            return ProviderImage(data=data, content_type=content_type)
        if not output.startswith(("https://", "http://")):
            raise Transient(f"{self.name}: output is not a URL", provider=self.name)
        return ProviderImage(url=output)

    def _failure(self, error: str) -> ProviderError:
        message = f"{self.name}: {error[:500]}"
        if _REFUSAL.search(error):
            return Refused(message, provider=self.name)
        if _INVALID.search(error):
            return InvalidRequest(message, provider=self.name)
        return Transient(message, provider=self.name)

    def _error(self, response: httpx.Response) -> ProviderError:
        error = error_for_status(self.name, response)
        if isinstance(error, ProviderRateLimited) and error.retry_after is None:
            with contextlib.suppress(ValidationError):
                error.retry_after = _ErrorBody.model_validate_json(response.content).retry_after
        if response.status_code == 402:
            return ProviderAuthError(error.message, provider=self.name, status_code=402)
        return error

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", self._headers())
        return await call(self.http, self.name, method, url, error=self._error, **kwargs)


class _Predict(PollingJob[_Prediction]):
    """A prediction: created (maybe already finished, thanks to ``Prefer: wait``), polled."""

    def __init__(self, provider: ReplicateProvider, request: ProviderRequest) -> None:
        self.provider = provider
        self.request = request
        self.model = request.model or provider.default_model
        self.spec = provider._spec(self.model)

    async def submit(self, run: JobRun) -> Submitted[_Prediction]:
        prediction = await self.provider._create(self.model, self.spec, self.request)
        return Submitted(prediction.id, self._state(prediction))

    async def poll(self, run: JobRun, job_id: str) -> _Prediction | Pending:
        return self._state(await self.provider._get(job_id))

    async def result(self, run: JobRun, job_id: str, done: _Prediction) -> ProviderResult:
        return self.provider._finish(self.model, self.spec, done)

    @staticmethod
    def _state(prediction: _Prediction) -> _Prediction | Pending:
        if prediction.status in TERMINAL:
            return prediction
        if prediction.status == "starting":
            return Pending(5, "starting")
        percent = _log_percent(prediction.logs)
        return Pending(10 + int(percent * 0.85) if percent else 50, "processing")


def _is_model_ref(name: str) -> bool:
    if _HEX_VERSION.match(name):
        return True
    base, _, version = name.partition(":")
    owner, slash, model = base.partition("/")
    return bool(owner and slash and model and "/" not in model) and (
        not version or bool(_HEX_VERSION.match(version))
    )


def _aspect(spec: ReplicateModel, request: ProviderRequest) -> str:
    if request.aspect_ratio and request.aspect_ratio in spec.aspect_ratios:
        return request.aspect_ratio
    return nearest_aspect_ratio(spec.aspect_ratios, request.width, request.height)


def _build_input(spec: ReplicateModel, request: ProviderRequest) -> dict[str, Any]:
    data: dict[str, Any] = {"prompt": request.prompt}
    fmt = "jpg" if request.format == "jpeg" else request.format
    style = spec.input_style
    if style == "generic":
        if request.aspect_ratio:
            data["aspect_ratio"] = request.aspect_ratio
        if request.seed is not None:
            data["seed"] = request.seed
        if request.negative_prompt:
            data["negative_prompt"] = request.negative_prompt
    elif style == "flux_schnell":
        data.update(aspect_ratio=_aspect(spec, request), num_outputs=request.n, output_format=fmt)
        if request.seed is not None:
            data["seed"] = request.seed
    elif style == "flux_pro":
        data.update(aspect_ratio=_aspect(spec, request), output_format=fmt)
        if request.seed is not None:
            data["seed"] = request.seed
    elif style == "nano_banana":
        data.update(
            aspect_ratio=_aspect(spec, request), output_format="jpg" if fmt == "jpg" else "png"
        )
    elif style == "ideogram":
        data["aspect_ratio"] = _aspect(spec, request)
        if request.seed is not None:
            data["seed"] = request.seed
        if request.negative_prompt and spec.negative_prompt:
            data["negative_prompt"] = request.negative_prompt
    merge_input(data, spec.input, request)
    return data


def _log_percent(logs: str | None) -> int:
    if not logs:
        return 0
    found = _LOG_PERCENT.findall(logs)
    return min(100, int(found[-1])) if found else 0
