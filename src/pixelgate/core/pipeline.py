"""The one generation pipeline: admission → dispatch → execute → materialize → finish.

Every entry point (native, seed-compatible, OpenAI-compatible, CLI, Python API)
goes through :meth:`Pipeline.admit`; every worker through :meth:`Pipeline.execute`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import structlog

from pixelgate.config import Settings
from pixelgate.core.bus import EventBus
from pixelgate.core.inputs import INPUT_FIELDS, JobInputs, load_inputs
from pixelgate.core.models import AccountView, GenerationRequest, GenerationView
from pixelgate.core.pricing import CreditRules, credits_for
from pixelgate.core.routing import Candidate, Deadline, RetryPolicy, check_explicit, plan_route
from pixelgate.db.billing import Quota
from pixelgate.db.store import AdmitResult, ClaimedJob, NewImage, Store
from pixelgate.errors import (
    ImageRejected,
    PixelgateError,
    ProviderError,
    ProviderTimeout,
    StorageError,
    UnsafeURL,
    ValidationFailed,
)
from pixelgate.media.fetch import SafeFetcher
from pixelgate.media.images import EXTENSIONS, process_image
from pixelgate.providers._http import download
from pixelgate.providers.base import ProviderImage, ProviderRequest, ProviderResult
from pixelgate.providers.registry import ProviderSet
from pixelgate.resilience.inbound import RequestLimiter
from pixelgate.storage.base import Storage, image_key

__all__ = ["Caller", "Estimate", "Pipeline"]

log = structlog.get_logger("pixelgate.pipeline")
#: the input images of the job running in this task (set by ``_load_inputs``)
_JOB_INPUTS: ContextVar[JobInputs | None] = ContextVar("pixelgate_job_inputs", default=None)
WEBHOOK_CHECK_TIMEOUT_S = 5.0

PROGRESS_MIN_INTERVAL_S = 0.25
#: called once a generation reaches a terminal state (webhooks, e-mail, cache…)
FinishHook = Callable[[GenerationView], Awaitable[None]]
DEFAULT_DEADLINE_S = 300.0
CANCEL_WAIT_S = 2.0


@dataclass(frozen=True)
class Caller:
    """Who is asking: the account behind the API key (or the CLI's local account)."""

    account_id: str
    account_name: str
    is_admin: bool = False
    key_id: str | None = None


@dataclass(frozen=True)
class Estimate:
    """What a request would cost, without running it (``POST /v1/estimate``)."""

    credits: int
    usd: Decimal | None
    provider: str | None
    model: str | None
    candidates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _RunState:
    """What a running job is doing right now (for cancellation at the provider)."""

    provider: str | None = None
    provider_job_id: str | None = None
    route: list[dict[str, Any]] = field(default_factory=list)


class _Context:
    """The :class:`~pixelgate.providers.base.JobContext` handed to adapters."""

    def __init__(
        self, pipeline: Pipeline, job: ClaimedJob, provider: str, state: _RunState
    ) -> None:
        self._pipeline = pipeline
        self._job = job
        self._provider = provider
        self._state = state
        self._last_progress = 0.0
        resumable = job.provider_job_provider == provider
        self._provider_job_id = job.provider_job_id if resumable else None

    @property
    def http(self) -> httpx.AsyncClient:
        return self._pipeline.http

    @property
    def provider_job_id(self) -> str | None:
        return self._provider_job_id

    async def save_provider_job(self, job_id: str) -> None:
        self._provider_job_id = job_id
        self._state.provider_job_id = job_id
        await self._pipeline.store.save_provider_job(self._job.id, self._provider, job_id)
        await self._pipeline.event(
            self._job.id, "provider_job", {"provider": self._provider, "job_id": job_id}
        )

    async def progress(self, percent: int, message: str | None = None) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_MIN_INTERVAL_S and percent < 100:
            return
        self._last_progress = now
        percent = max(0, min(99, int(percent)))
        data: dict[str, Any] = {"progress": percent}
        if message:
            data["message"] = message
        await self._pipeline.event(self._job.id, "progress", data, progress=percent)


class Pipeline:
    """Admits requests and executes jobs; shared by the API, the CLI and workers."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        storage: Storage,
        providers: ProviderSet,
        bus: EventBus,
        http: httpx.AsyncClient,
        retry: RetryPolicy | None = None,
        limiter: RequestLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.providers = providers
        self.bus = bus
        self.http = http
        self.retry = retry or RetryPolicy()
        self.credit_rules = CreditRules(
            **settings.credits.model_dump(exclude={"cache_price", "default_policy"})
        )
        self.limiter = limiter or RequestLimiter()
        self.finish_hooks: list[FinishHook] = []
        #: fetches user URLs (input images here; webhooks use it too)
        self.fetcher = SafeFetcher()
        self._running: dict[str, _RunState] = {}
        self._hook_tasks: set[asyncio.Task[None]] = set()

    # Admission -----------------------------------------------------------------

    def validate(self, request: GenerationRequest) -> None:
        """Checks that depend on configuration; raises ``ValidationFailed`` naming the field."""
        s = self.settings
        if len(request.prompt) > s.max_prompt_length:
            raise ValidationFailed(
                "prompt", f"longer than {s.max_prompt_length} characters", code="prompt_too_long"
            )
        if request.n > s.max_n:
            raise ValidationFailed("n", f"must be at most {s.max_n}")
        width, height = request.dimensions()
        for name, value in (("width", width), ("height", height)):
            if value > s.max_dimension:
                raise ValidationFailed(name, f"must be at most {s.max_dimension}")
        check_explicit(request, self.providers)

    async def admit(
        self,
        caller: Caller,
        request: GenerationRequest,
        *,
        source: str = "native",
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> AdmitResult:
        """Validate, price and persist a request (one transaction), then wake a worker.

        Raises:
            ValidationFailed, InsufficientCredits, BudgetExceeded, RateLimited: nothing
            is written or charged.
        """
        self.validate(request)
        await self._check_user_urls(caller, request)
        account = await self.store.get_account(caller.account_id)
        estimate = self.estimate(request, account)
        tier = self.settings.tier(account.tier)
        await self.limiter.hit(account.id, tier.requests_per_minute)
        payload = request.model_dump(mode="json", exclude_none=True)
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        quota = Quota(tier.daily_limit, tier.window_s) if tier.daily_limit is not None else None
        result = await self.store.admit(
            account_id=caller.account_id,
            project=request.project,
            prompt=request.prompt,
            request=payload,
            request_hash=digest,
            source=source,
            credits=estimate.credits,
            estimated_usd=estimate.usd,
            idempotency_key=idempotency_key,
            request_id=request_id,
            quota=quota,
        )
        if result.created:
            await self.bus.notify_jobs()
        return result

    def estimate(self, request: GenerationRequest, account: AccountView) -> Estimate:
        """Credits and USD the request costs: the same numbers admission charges.

        Raises:
            ValidationFailed: ``max_cost_per_image`` excludes every capable provider.
        """
        credits = credits_for(request, self.credit_rules)
        candidates, _ = plan_route(request, self.providers, preferred=account.preferred_providers)
        priced = []
        for candidate in candidates:
            usd = candidate.provider.price(self._provider_request(request, candidate.model))
            cap = request.max_cost_per_image
            if cap is not None and usd / request.n > cap:
                continue
            priced.append((candidate, usd))
        if candidates and not priced:
            raise ValidationFailed(
                "max_cost_per_image",
                f"no provider can serve this request for at most ${request.max_cost_per_image} "
                "per image",
                code="no_provider_within_budget",
            )
        first = priced[0] if priced else None
        return Estimate(
            credits=credits,
            usd=first[1] if first else None,
            provider=first[0].provider.name if first else None,
            model=first[0].model if first else None,
            candidates=[
                {"provider": c.provider.name, "model": c.model, "usd": str(usd)}
                for c, usd in priced
            ],
        )

    # Waiting -------------------------------------------------------------------

    async def wait(self, generation_id: str, timeout: float) -> GenerationView:
        """The generation once terminal, or as it is when ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        async with self.bus.subscribe(generation_id) as sub:
            while True:
                state = await self.store.status_of(generation_id)
                if state is not None and state[0] in ("SUCCEEDED", "FAILED", "CANCELED"):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # the poll bounds the wait if a notification is lost (another process)
                await sub.wait(min(remaining, 1.0))
        return await self.store.get_generation(generation_id)

    async def finished(self, generation_id: str) -> None:
        """Announce a terminal state: wake waiters, then run the finish hooks in the background."""
        await self.bus.publish(generation_id)
        if not self.finish_hooks:
            return
        view = await self.store.get_generation(generation_id)
        for hook in self.finish_hooks:
            task = asyncio.create_task(self._run_hook(hook, view))
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    async def _run_hook(self, hook: FinishHook, view: GenerationView) -> None:
        try:
            await hook(view)
        except Exception:
            log.exception("finish_hook_failed", generation_id=view.id,
                          hook=getattr(hook, "__qualname__", repr(hook)))

    async def drain_hooks(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for finish hooks still running, at shutdown."""
        if self._hook_tasks:
            await asyncio.wait(list(self._hook_tasks), timeout=timeout)

    async def cancel(self, generation_id: str, account_id: str | None) -> GenerationView:
        """Cancel: a PENDING job ends at once (refunded); a running one is stopped by its worker."""
        view, event_id = await self.store.cancel(generation_id, account_id=account_id)
        if event_id:
            await self.finished(generation_id)
            return view
        await self.bus.request_cancel(generation_id)
        return await self.wait(generation_id, CANCEL_WAIT_S)

    async def event(
        self, generation_id: str, type_: str, data: dict[str, Any] | None = None, **values: Any
    ) -> int:
        event_id = await self.store.add_event(generation_id, type_, data, **values)
        await self.bus.publish(generation_id)
        return event_id

    # Execution -----------------------------------------------------------------

    async def execute(self, job: ClaimedJob, owner: str) -> None:
        """Run one claimed job to a terminal state (or leave it for a re-run if cancelled)."""
        state = _RunState()
        self._running[job.id] = state
        try:
            if await self._load_inputs(job, owner):
                await self._execute(job, owner, state)
        finally:
            self._running.pop(job.id, None)

    async def cancel_running(self, job: ClaimedJob, owner: str) -> None:
        """Finish a job whose cancellation was requested, cancelling it at the provider."""
        state = self._running.get(job.id) or _RunState()
        if state.provider and state.provider_job_id:
            provider = self.providers.find(state.provider)
            if provider is not None:
                try:
                    await provider.cancel(state.provider_job_id)
                except Exception:  # best effort: the job is canceled on our side anyway
                    log.warning(
                        "provider_cancel_failed", generation_id=job.id, provider=state.provider
                    )
        event_id = await self.store.finish_canceled(job.id, owner, route=state.route)
        if event_id is not None:
            await self.finished(job.id)

    async def fail(self, job: ClaimedJob, owner: str | None, code: str, message: str) -> None:
        event_id = await self.store.finish_failed(
            job.id, owner, code=code, message=message, route=[], account_id=job.account_id
        )
        if event_id is not None:
            await self.finished(job.id)

    async def _execute(self, job: ClaimedJob, owner: str, state: _RunState) -> None:
        await self.bus.publish(job.id)  # the "started" event written by the claim
        try:
            request = GenerationRequest.model_validate(job.request)
        except ValueError as exc:
            await self.fail(job, owner, "invalid_request", f"stored request is invalid: {exc}")
            return
        account = await self.store.get_account(job.account_id)
        candidates, trace = plan_route(
            request, self.providers, preferred=account.preferred_providers
        )
        state.route = trace
        deadline = Deadline(DEFAULT_DEADLINE_S)
        last_error: PixelgateError | None = None
        for candidate in candidates:
            try:
                result, elapsed_ms = await self._attempt(job, request, candidate, state, deadline)
                images = await self._materialize(job, request, result)
            except (ProviderError, ImageRejected, StorageError) as exc:
                last_error = exc
                self._trace(state, candidate, "failed", error=exc.code, message=exc.message)
                if isinstance(exc, ProviderError) and job.provider_job_provider:
                    await self.store.clear_provider_job(job.id)
                continue
            self._trace(state, candidate, "succeeded")
            event_id = await self.store.finish_succeeded(
                job.id,
                owner,
                provider=candidate.provider.name,
                model=result.model,
                images=images,
                cost_usd=result.cost_usd,
                provider_ms=elapsed_ms,
                route=state.route,
                account_id=job.account_id,
            )
            if event_id is not None:
                await self.finished(job.id)
            return
        if last_error is None:
            last_error = ValidationFailed(
                "provider", "no configured provider can serve this request", code="no_provider"
            )
        event_id = await self.store.finish_failed(
            job.id,
            owner,
            code=last_error.code,
            message=last_error.message,
            route=state.route,
            account_id=job.account_id,
            provider=candidates[-1].provider.name if candidates else None,
        )
        if event_id is not None:
            await self.finished(job.id)

    def _trace(self, state: _RunState, candidate: Candidate, decision: str, **extra: Any) -> None:
        state.route.append(
            {
                "provider": candidate.provider.name,
                "model": candidate.model,
                "decision": decision,
                **extra,
            }
        )

    async def _attempt(
        self,
        job: ClaimedJob,
        request: GenerationRequest,
        candidate: Candidate,
        state: _RunState,
        deadline: Deadline,
    ) -> tuple[ProviderResult, int]:
        provider = candidate.provider
        state.provider = provider.name
        state.provider_job_id = None
        await self.event(
            job.id,
            "provider_selected",
            {"provider": provider.name, "model": candidate.model, "reason": candidate.reason},
            provider=provider.name,
            model=candidate.model,
        )
        provider_request = self._provider_request(request, candidate.model)
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            ctx = _Context(self, job, provider.name, state)
            try:
                timeout = max(0.001, min(provider.settings.timeout_s, deadline.remaining()))
                async with asyncio.timeout(timeout):
                    result = await provider.generate(provider_request, ctx)
                if not result.images:
                    raise ProviderError(
                        f"{provider.name}: no image returned",
                        provider=provider.name,
                        code="no_image",
                    )
                return result, int((time.monotonic() - started) * 1000)
            except TimeoutError:
                error: ProviderError = ProviderTimeout(
                    f"{provider.name}: no result within {provider.settings.timeout_s:g} s",
                    provider=provider.name,
                )
            except ProviderError as exc:
                error = exc
            if not error.retryable or attempt >= self.retry.attempts:
                raise error
            delay = self.retry.delay(attempt, error.retry_after)
            from pixelgate.db.store import utcnow

            await self.event(
                job.id,
                "retrying",
                {
                    "provider": provider.name,
                    "attempt": attempt,
                    "error": error.code,
                    "message": error.message,
                    "delay_s": round(delay, 3),
                },
                retry_count=attempt,
                last_retry_at=utcnow(),
            )
            if not await deadline.sleep(delay):
                raise error

    # Inputs --------------------------------------------------------------------

    async def _check_user_urls(self, caller: Caller, request: GenerationRequest) -> None:
        """Admission: uploaded inputs must be the caller's; the webhook must be public."""
        for name in ("input_image_key", "input_mask_key", "input_reference_key"):
            key = getattr(request, name)
            if key and not key.startswith(f"inputs/{caller.account_id}/"):
                raise ValidationFailed(name, "not an input of this account", code="input_not_found")
        if request.webhook_url:
            try:
                async with asyncio.timeout(WEBHOOK_CHECK_TIMEOUT_S):
                    await self.fetcher.check(
                        request.webhook_url,
                        allow_hosts=self.settings.webhook_allow_hosts,
                        what="webhook_url",
                    )
            except UnsafeURL as exc:
                message = exc.message.removeprefix("webhook_url: ")
                raise ValidationFailed("webhook_url", message, code="unsafe_url") from None
            except TimeoutError:
                raise ValidationFailed(
                    "webhook_url", "the host does not resolve", code="unsafe_url"
                ) from None

    async def _load_inputs(self, job: ClaimedJob, owner: str) -> bool:
        """Load the job's input images for this task; fail the job when one is unusable."""
        _JOB_INPUTS.set(None)
        if not any(job.request.get(name) for name in INPUT_FIELDS):
            return True
        try:
            request = GenerationRequest.model_validate(job.request)
        except ValueError:
            return True  # _execute reports an invalid stored request
        try:
            inputs = await load_inputs(
                request,
                account_id=job.account_id,
                storage=self.storage,
                fetcher=self.fetcher,
                settings=self.settings,
            )
        except PixelgateError as exc:
            log.info("inputs_unavailable", generation_id=job.id, code=exc.code)
            await self.fail(job, owner, exc.code, exc.message)
            return False
        _JOB_INPUTS.set(inputs)
        return True

    def _provider_request(self, request: GenerationRequest, model: str) -> ProviderRequest:
        width, height = request.dimensions()
        inputs = _JOB_INPUTS.get() or JobInputs()
        return ProviderRequest(
            prompt=request.prompt,
            model=model,
            negative_prompt=request.negative_prompt,
            n=request.n,
            width=width,
            height=height,
            aspect_ratio=request.aspect_ratio,
            format=request.format,
            quality=request.quality,
            style=request.style,
            seed=request.seed,
            background=request.background,
            reference_image=inputs.reference_image,
            edit_image=inputs.edit_image,
            mask=inputs.mask,
            options=dict(request.options),
        )

    async def _materialize(
        self, job: ClaimedJob, request: GenerationRequest, result: ProviderResult
    ) -> list[NewImage]:
        """Fetch (once, size-capped), decode, validate, convert, hash and store each image."""
        stored: list[NewImage] = []
        for index, image in enumerate(result.images):
            data = await self._image_bytes(image, result)
            processed = await process_image(
                data,
                want_format=request.format,
                max_bytes=self.settings.max_image_bytes,
                max_pixels=self.settings.max_image_pixels,
            )
            key = image_key(
                prefix=self.settings.storage_prefix,
                account=job.account_name,
                project=job.project,
                created_at=job.created_at,
                generation_id=job.id,
                index=index,
                ext=EXTENSIONS[processed.format],
            )
            await self.storage.put(key, processed.data, processed.content_type)
            stored.append(
                NewImage(
                    index=index,
                    key=key,
                    width=processed.width,
                    height=processed.height,
                    format=processed.format,
                    content_type=processed.content_type,
                    bytes=processed.bytes,
                    sha256=processed.sha256,
                    attribution=image.attribution,
                )
            )
        return stored

    async def _image_bytes(self, image: ProviderImage, result: ProviderResult) -> bytes:
        if image.data is not None:
            return image.data
        if image.url is None:
            raise ProviderError(
                "provider returned an image with neither bytes nor URL", code="no_image"
            )
        data, _ = await download(
            self.http, result.model, image.url, max_bytes=self.settings.max_image_bytes
        )
        return data
