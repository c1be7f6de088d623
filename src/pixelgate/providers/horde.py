"""AI Horde adapter: the community-run, crowdsourced Stable Diffusion cluster.

API: https://aihorde.net/api (v2). ``POST /v2/generate/async`` returns a request id
(saved for resume); ``GET /v2/generate/check/{id}`` is the cheap poll (queue
position, wait time, done/faulted); ``GET /v2/generate/status/{id}`` (rate limited
by the Horde, so called once when done) holds ``generations[].img``, an R2 URL or,
with ``r2: false``, base64 WebP. ``DELETE /v2/generate/status/{id}`` cancels.
Every request carries ``Client-Agent`` as the Horde asks. Anonymous use works with
the key ``0000000000`` (lowest priority, small sizes only).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, Field

from pixelgate.providers._http import call, error_body, error_for_status, parse, parse_retry_after
from pixelgate.providers._jobs import (
    JobRun,
    Pending,
    PollingJob,
    Submitted,
    cancel_quietly,
    run_polling_job,
)
from pixelgate.providers._shapes import decode_image
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
    Refused,
    Transient,
)

__all__ = ["HordeProvider", "HordeSettings"]

log = structlog.get_logger(__name__)

ANONYMOUS_KEY = "0000000000"
DEFAULT_CLIENT_AGENT = "pixelgate:0.1.0:https://github.com/pixelgate/pixelgate"
ANY_MODEL = "any"
SIZE_STEP = 64
MIN_SIZE = 64
MAX_SIZE = 3072
MAX_N = 20
#: Horde error codes (``rc``) that are a refusal of the prompt's content
REFUSAL_RC = frozenset({"CorruptPrompt", "Profanity"})
AUTH_RC = frozenset({"InvalidAPIKey", "WrongCredentials", "SharedKeyExpired", "SharedKeyEmpty"})
RATE_RC = frozenset({"TooManyPrompts", "TimeoutIP"})

#: well-known Horde model names; any other name is passed through as-is
KNOWN_MODELS = (
    "stable_diffusion",
    "Deliberate",
    "AlbedoBase XL (SDXL)",
    "Flux.1-Schnell fp8 (Compact)",
)


class HordeSettings(ProviderSettings):
    """Settings of a ``kind = "horde"`` instance (the key is optional)."""

    kind: str = "horde"
    #: ``name:version:contact``, required by the Horde to identify the client
    client_agent: str = DEFAULT_CLIENT_AGENT
    #: return base64 images inline instead of R2 download links
    r2: bool = True
    nsfw: bool = False
    censor_nsfw: bool = True
    trusted_workers: bool = False
    slow_workers: bool = True
    sampler_name: str = "k_euler_a"
    steps: int = Field(default=20, ge=1, le=500)
    cfg_scale: float = 7.0
    #: extra ``params`` merged into every request
    params: dict[str, Any] = Field(default_factory=dict)


class _Submitted(BaseModel):
    id: str
    kudos: float | None = None
    message: str | None = None


class _Check(BaseModel):
    done: bool = False
    faulted: bool = False
    finished: int = 0
    processing: int = 0
    waiting: int = 0
    restarted: int = 0
    queue_position: int = 0
    wait_time: float = 0
    is_possible: bool = True


class _Meta(BaseModel):
    type: str = ""
    value: str = ""


class _Generation(BaseModel):
    img: str = ""
    seed: str | None = None
    censored: bool = False
    state: str | None = None
    model: str | None = None
    worker_name: str | None = None
    gen_metadata: list[_Meta] = Field(default_factory=list)


class _Status(_Check):
    generations: list[_Generation] = Field(default_factory=list)


class _ErrorBody(BaseModel):
    message: str | None = None
    rc: str | None = None


class HordeProvider(Provider):
    """AI Horde text-to-image; works anonymously, free (kudos-based priority)."""

    kind = "horde"
    settings_class = HordeSettings
    key_env = None
    default_base_url = "https://aihorde.net/api"
    needs_key = False

    settings: HordeSettings

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {name: _info(name) for name in (ANY_MODEL, *KNOWN_MODELS)}

    def model_info(self, model: str | None) -> ModelInfo:
        return _info(model or self.default_model)

    def api_key(self) -> str:
        if self.settings.api_key is None:
            return ANONYMOUS_KEY
        return self.settings.api_key.get_secret_value()

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        return await run_polling_job(self, ctx, _HordeJob(self, request))

    async def cancel(self, provider_job_id: str) -> None:
        """Best-effort ``DELETE /v2/generate/status/{id}``; never raises."""
        url = f"{self.base_url}/v2/generate/status/{provider_job_id}"
        await cancel_quietly(self.name, provider_job_id, lambda: self._call("DELETE", url))

    # -- internals -----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"apikey": self.api_key(), "Client-Agent": self.settings.client_agent}

    def _body(self, model: str, request: ProviderRequest) -> dict[str, Any]:
        prompt = request.prompt
        if request.negative_prompt:
            # The Horde's convention: "positive ### negative".
            prompt = f"{prompt} ### {request.negative_prompt}"
        params: dict[str, Any] = {
            "sampler_name": self.settings.sampler_name,
            "cfg_scale": self.settings.cfg_scale,
            "steps": self.settings.steps,
            "width": _size(request.width),
            "height": _size(request.height),
            "n": min(request.n, MAX_N),
        }
        if request.seed is not None:
            params["seed"] = str(request.seed)
        params.update(self.settings.params)
        extra = request.options.get("params")
        if isinstance(extra, dict):
            params.update(extra)
        body: dict[str, Any] = {
            "prompt": prompt,
            "params": params,
            "nsfw": self.settings.nsfw,
            "censor_nsfw": self.settings.censor_nsfw,
            "trusted_workers": self.settings.trusted_workers,
            "slow_workers": self.settings.slow_workers,
            "r2": self.settings.r2,
        }
        if model != ANY_MODEL:
            body["models"] = [model]
        return body

    def _finish(self, model: str, job_id: str, status: _Status) -> ProviderResult:
        if status.faulted:
            raise Transient(f"{self.name}: generation {job_id} faulted", provider=self.name)
        kept = [gen for gen in status.generations if not _censored(gen)]
        if not kept:
            if status.generations:
                raise Refused(
                    f"{self.name}: every image was censored by the worker's safety filter",
                    provider=self.name,
                )
            raise Transient(f"{self.name}: generation {job_id} has no images", provider=self.name)
        images = [self._image(gen) for gen in kept]
        return ProviderResult(
            images=images,
            model=model,
            cost_usd=Decimal("0"),
            provider_job_id=job_id,
            metadata={
                "censored": len(status.generations) - len(kept),
                "workers": [gen.worker_name for gen in kept],
                "models": [gen.model for gen in kept],
            },
        )

    def _image(self, gen: _Generation) -> ProviderImage:
        seed = int(gen.seed) if gen.seed and gen.seed.isdigit() else None
        if gen.img.startswith(("https://", "http://")):
            return ProviderImage(url=gen.img, content_type="image/webp", seed=seed)
        data = decode_image(self.name, gen.img)
        return ProviderImage(data=data, content_type="image/webp", seed=seed)

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await call(
            self.http, self.name, method, url, headers=self._headers(), error=self._error, **kwargs
        )

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        body = error_body(_ErrorBody, response)
        rc = body.rc or ""
        message = f"{self.name}: HTTP {status}: {(body.message or response.reason_phrase)[:500]}"
        if rc:
            message = f"{message} ({rc})"
        kwargs: dict[str, Any] = {"provider": self.name, "status_code": status}
        if status == 429 or rc in RATE_RC:
            return ProviderRateLimited(
                message, retry_after=parse_retry_after(response.headers), **kwargs
            )
        if rc in REFUSAL_RC:
            return Refused(message, **kwargs)
        if status == 401 or rc in AUTH_RC:
            return ProviderAuthError(message, **kwargs)
        if status == 403:
            # KudosUpfront, AnonForbidden...: this request is too big for this key.
            return InvalidRequest(message, **kwargs)
        if status == 404:
            return Transient(f"{message}: the request expired or was never made", **kwargs)
        if status < 500 and status not in (408, 409):
            return InvalidRequest(message, **kwargs)
        return error_for_status(self.name, response)


class _HordeJob(PollingJob[_Check]):
    """An async request: submitted, ``check``-polled (cheap), its ``status`` read once done."""

    def __init__(self, provider: HordeProvider, request: ProviderRequest) -> None:
        self.provider = provider
        self.request = request
        self.model = request.model or provider.default_model

    async def submit(self, run: JobRun) -> Submitted[_Check]:
        horde = self.provider
        url = f"{horde.base_url}/v2/generate/async"
        response = await horde._call("POST", url, json=horde._body(self.model, self.request))
        return Submitted(parse(horde.name, _Submitted, response).id)

    async def poll(self, run: JobRun, job_id: str) -> _Check | Pending:
        horde = self.provider
        url = f"{horde.base_url}/v2/generate/check/{job_id}"
        check = parse(horde.name, _Check, await horde._call("GET", url))
        if check.faulted:
            raise Transient(f"{horde.name}: generation {job_id} faulted", provider=horde.name)
        if check.done:
            return check
        if not check.is_possible:
            await horde.cancel(job_id)
            raise Transient(
                f"{horde.name}: no worker can serve this request (model or size)",
                provider=horde.name,
            )
        if check.processing or check.finished:
            total = max(self.request.n, check.finished + check.processing + check.waiting, 1)
            return Pending(
                10 + int(85 * check.finished / total),
                f"{check.finished}/{total} done, {check.processing} processing",
            )
        return Pending(
            max(1, 9 - min(check.queue_position, 8)),
            f"queue position {check.queue_position}, about {check.wait_time:.0f} s",
        )

    async def result(self, run: JobRun, job_id: str, done: _Check) -> ProviderResult:
        horde = self.provider
        url = f"{horde.base_url}/v2/generate/status/{job_id}"
        status = parse(horde.name, _Status, await horde._call("GET", url))
        return horde._finish(self.model, job_id, status)


def _info(name: str) -> ModelInfo:
    caps = Capabilities(
        negative_prompt=True,
        seed=True,
        max_n=MAX_N,
        output_formats=("webp",),
        max_width=MAX_SIZE,
        max_height=MAX_SIZE,
    )
    description = "any available worker model" if name == ANY_MODEL else f"Horde model {name}"
    # Free: the Horde runs on donated GPUs and prioritises by kudos, not money.
    return ModelInfo(name, caps, Decimal("0"), description)


def _size(value: int) -> int:
    """The Horde wants multiples of 64 between 64 and 3072."""
    rounded = round(value / SIZE_STEP) * SIZE_STEP
    return max(MIN_SIZE, min(MAX_SIZE, rounded))


def _censored(gen: _Generation) -> bool:
    return (
        gen.censored
        or gen.state == "censored"
        or any(meta.type == "censorship" for meta in gen.gen_metadata)
    )
