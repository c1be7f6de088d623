"""The one generation pipeline: admission → dispatch → execute → materialize → finish.

Every entry point (native, seed-compatible, OpenAI-compatible, CLI, Python API)
goes through :meth:`Pipeline.admit`; every worker through :meth:`Pipeline.execute`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import structlog

from pixelgate.config import Settings
from pixelgate.core.bus import EventBus
from pixelgate.core.cache import cache_key, wants_cache
from pixelgate.core.context import AttemptContext, JobEvents, JobRun, RunState
from pixelgate.core.eventbuffer import EventBuffer
from pixelgate.core.finish import FinishHook
from pixelgate.core.finishing import Finisher
from pixelgate.core.materialize import Materializer, provider_request
from pixelgate.core.models import AccountView, GenerationRequest, GenerationView, Status
from pixelgate.core.pricing import CreditRules, credits_for
from pixelgate.core.progress import ProgressTicker
from pixelgate.core.routing import (
    AccountRouting,
    Candidate,
    Deadline,
    Race,
    RaceFailed,
    RetryPolicy,
    check_explicit,
    format_usd,
    plan_route,
    resolve_options,
)
from pixelgate.core.templates import final_prompt, parse_template
from pixelgate.db.billing import Quota
from pixelgate.db.store import (
    AdmitResult,
    BatchView,
    CacheLookup,
    ClaimedJob,
    NewGeneration,
    NewImage,
    RunningEvent,
    Store,
    utcnow,
)
from pixelgate.errors import (
    ImageRejected,
    PixelgateError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    StorageError,
    UnsafeURL,
    ValidationFailed,
)
from pixelgate.media.fetch import SafeFetcher
from pixelgate.providers.base import Provider, ProviderRequest, ProviderResult
from pixelgate.providers.registry import ProviderSet
from pixelgate.resilience.breaker import (
    DEADLINE_EXCEEDED,
    BreakerState,
    Outcome,
    Transition,
    outcome_of,
)
from pixelgate.resilience.control import RoutingControl
from pixelgate.resilience.inbound import RequestLimiter
from pixelgate.resilience.outbound import WaitInfo
from pixelgate.resilience.shared import SharedState
from pixelgate.storage.base import Storage

__all__ = ["Caller", "Estimate", "Pipeline"]

log = structlog.get_logger("pixelgate.pipeline")
WEBHOOK_CHECK_TIMEOUT_S = 5.0

#: the ``latency`` policy ranks providers by their observed median
LATENCY_POLICY_PERCENTILE = 0.5
PROVIDER_CANCEL_TIMEOUT_S = 5.0


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
        shared: SharedState | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.providers = providers
        self.bus = bus
        #: overrides the configured retry policy when set (tests, embedding)
        self.retry: RetryPolicy | None = retry
        #: live routing configuration, breakers, outbound limits, attempt statistics;
        #: ``shared`` (memory, or Redis with scale-out) is opened from settings if not given
        self.control = RoutingControl(settings, providers, source=store, shared=shared)
        self.credit_rules = CreditRules(
            **settings.credits.model_dump(exclude={"cache_price", "default_policy"})
        )
        self.limiter = limiter or RequestLimiter(
            self.control.shared.limits, guard=self.control.shared.guard
        )
        #: fetches user URLs (input images here; webhooks use it too)
        self.fetcher = SafeFetcher()
        self._running: dict[str, RunState] = {}
        #: running jobs' events, written together (group commit)
        self.events = EventBuffer(
            settings.event_flush_interval_s, store.add_running_events, bus.publish
        )
        self.job_events = JobEvents(self.events)
        #: simulated progress of attempts whose provider reports none
        self.ticker = ProgressTicker(
            settings.simulated_progress_interval_s, self.job_events.simulated
        )
        self.materializer = Materializer(
            settings=settings, storage=storage, fetcher=self.fetcher, http=http
        )
        self.finisher = Finisher(
            store=store, bus=bus, events=self.job_events, materializer=self.materializer
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """The pooled HTTP client adapters and result downloads use."""
        return self.materializer.http

    @http.setter
    def http(self, client: httpx.AsyncClient) -> None:
        self.materializer.http = client

    @property
    def finish_hooks(self) -> list[FinishHook]:
        """Run once a generation reaches a terminal state; append to add one."""
        return self.finisher.hooks

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
        request = await self.resolve_prompt(caller, request)
        self.validate(request)
        await self._check_user_urls(caller, request)
        account = await self.store.get_account_cached(caller.account_id)
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
            cache=self._cache_lookup(request, account),
            entities=_entity_pairs(request),
            account_name=account.name,
        )
        if result.created:
            if result.generation.terminal:  # a cache hit: done at admission
                await self.finisher.finished(result.generation.id)
            else:
                await self.bus.notify_jobs()
        return result

    async def admit_batch(
        self,
        caller: Caller,
        requests: list[GenerationRequest],
        *,
        concurrency: int | None = None,
        metadata: dict[str, Any] | None = None,
        source: str = "batch",
        request_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> BatchView:
        """Admit a batch: every request becomes a normal generation, all or none.

        A reused ``idempotency_key`` returns the earlier batch (``replayed``) for the same
        requests, else ``Conflict``.

        Raises:
            ValidationFailed: naming ``requests.<i>.<field>``; InsufficientCredits (the
                price of the whole batch), BudgetExceeded, RateLimited: nothing is
                written or charged.
        """
        if not requests:
            raise ValidationFailed("requests", "must not be empty")
        if len(requests) > self.settings.max_batch_size:
            raise ValidationFailed(
                "requests",
                f"at most {self.settings.max_batch_size} requests per batch",
                code="batch_too_large",
            )
        account = await self.store.get_account(caller.account_id)
        members: list[NewGeneration] = []
        for index, request in enumerate(requests):
            try:
                request = await self.resolve_prompt(caller, request)
                self.validate(request)
                await self._check_user_urls(caller, request)
                estimate = self.estimate(request, account)
            except ValidationFailed as exc:
                raise ValidationFailed(
                    f"requests.{index}.{exc.field}",
                    exc.message.removeprefix(f"{exc.field}: "),
                    code=exc.code,
                ) from None
            payload = request.model_dump(mode="json", exclude_none=True)
            members.append(
                NewGeneration(
                    project=request.project,
                    prompt=request.prompt,
                    request=payload,
                    request_hash=hashlib.sha256(
                        json.dumps(payload, sort_keys=True).encode()
                    ).hexdigest(),
                    credits=estimate.credits,
                    estimated_usd=estimate.usd,
                    cache=self._cache_lookup(request, account),
                    entities=_entity_pairs(request),
                )
            )
        tier = self.settings.tier(account.tier)
        await self.limiter.hit(account.id, tier.requests_per_minute)
        quota = Quota(tier.daily_limit, tier.window_s) if tier.daily_limit is not None else None
        digest = hashlib.sha256(
            json.dumps(
                [concurrency, metadata or {}, *(m.request for m in members)], sort_keys=True
            ).encode()
        ).hexdigest()
        batch = await self.store.admit_batch(
            account_id=caller.account_id,
            members=members,
            concurrency=concurrency,
            metadata=metadata or {},
            source=source,
            request_id=request_id,
            quota=quota,
            idempotency_key=idempotency_key,
            request_hash=digest,
        )
        if batch.replayed:
            return batch
        await self.bus.notify_jobs()
        for gen_id, status in batch.members.items():
            if status == "SUCCEEDED":  # cache hits
                await self.finisher.finished(gen_id)
        return batch

    async def cancel_batch(self, batch_id: str, account_id: str | None) -> BatchView:
        """Cancel a batch's unfinished members: waiting ones now, running ones by their
        workers (as ``DELETE /v1/generations/{id}`` does)."""
        canceled, running = await self.store.cancel_batch(batch_id, account_id=account_id)
        for gen_id in canceled:
            await self.finisher.finished(gen_id)
        for gen_id in running:
            await self.bus.request_cancel(gen_id)
        return await self.store.get_batch(batch_id, account_id=account_id)

    async def resolve_prompt(self, caller: Caller, request: GenerationRequest) -> GenerationRequest:
        """The request with its final prompt: the account's template rendered with
        ``inputs``, then the narrative context (``docs/prompts.md``).

        Raises:
            ValidationFailed: ``template`` (unknown), ``inputs.<name>`` (missing or
                unknown placeholder), ``prompt`` (given with a template).
        """
        if request.template is None and request.context is None and not request.inputs:
            return request
        template = None
        if request.template is not None:
            if request.prompt:
                raise ValidationFailed("prompt", "give prompt or template, not both")
            found = await self.store.find_template(caller.account_id, request.template)
            if found is None:
                raise ValidationFailed(
                    "template",
                    f"no template {request.template!r} in this account",
                    code="template_not_found",
                )
            template = parse_template(found.text, field="template")
        return request.model_copy(update={"prompt": final_prompt(request, template)})

    def _cache_lookup(self, request: GenerationRequest, account: AccountView) -> CacheLookup | None:
        key = cache_key(request)
        if key is None:
            return None
        return CacheLookup(
            key=key,
            use=wants_cache(request, account),
            credits=self.settings.credits.cache_price,
        )

    def estimate(self, request: GenerationRequest, account: AccountView) -> Estimate:
        """Credits and USD the request costs: the same numbers admission charges.

        Raises:
            ValidationFailed: ``max_cost_per_image`` excludes every capable provider.
        """
        credits = credits_for(request, self.credit_rules)
        candidates, _ = plan_route(request, self.providers, preferred=account.preferred_providers)
        priced = []
        for candidate in candidates:
            usd = candidate.provider.price(provider_request(request, candidate.model))
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
        return await self.finisher.wait(generation_id, timeout)

    async def finished(
        self, generation_id: str, status: Status | None = None, job: ClaimedJob | None = None
    ) -> None:
        """Announce a terminal state: wake waiters, then run the finish hooks in the background."""
        await self.finisher.finished(generation_id, status, job)

    async def drain_hooks(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for finish hooks still running, at shutdown."""
        await self.finisher.drain_hooks(timeout)

    async def cancel(self, generation_id: str, account_id: str | None) -> GenerationView:
        """Cancel: a PENDING job ends at once (refunded); a running one is stopped by its worker."""
        return await self.finisher.cancel(generation_id, account_id)

    async def fail(self, job: ClaimedJob, owner: str | None, code: str, message: str) -> None:
        """Fail a job before any provider was tried (refunded)."""
        await self.finisher.fail(job, owner, code, message)

    async def event(
        self, generation_id: str, type_: str, data: dict[str, Any] | None = None, **values: Any
    ) -> None:
        """An event of a running job (and the generation columns it sets), group-committed."""
        await self.job_events.event(generation_id, type_, data, **values)

    async def running_events(self, events: list[RunningEvent]) -> None:
        """Events of running jobs; none lands after its job ended."""
        await self.job_events.add(events)

    # Execution -----------------------------------------------------------------

    async def execute(self, job: ClaimedJob, owner: str) -> None:
        """Run one claimed job to a terminal state (or leave it for a re-run if cancelled)."""
        state = RunState()
        self._running[job.id] = state
        try:
            try:
                await self.materializer.load_inputs(job)
            except PixelgateError as exc:
                log.info("inputs_unavailable", generation_id=job.id, code=exc.code)
                await self.fail(job, owner, exc.code, exc.message)
                return
            await self._execute(job, owner, state)
        finally:
            self._running.pop(job.id, None)

    async def cancel_running(self, job: ClaimedJob, owner: str) -> None:
        """Finish a job whose cancellation was requested, cancelling it at the provider."""
        state = self._running.get(job.id) or RunState()
        jobs = dict(state.jobs)
        if state.provider and state.provider_job_id:
            jobs.setdefault(state.provider, state.provider_job_id)
        for name, provider_job_id in jobs.items():
            provider = self.providers.find(name)
            if provider is not None:
                try:
                    await provider.cancel(provider_job_id)
                except Exception:  # best effort: the job is canceled on our side anyway
                    log.warning("provider_cancel_failed", generation_id=job.id, provider=name)
        await self.finisher.canceled(job, owner, state.route)

    async def _execute(self, job: ClaimedJob, owner: str, state: RunState) -> None:
        await self.bus.publish(job.id)  # the "started" event written by the claim
        try:
            request = GenerationRequest.model_validate(job.request)
        except ValueError as exc:
            await self.fail(job, owner, "invalid_request", f"stored request is invalid: {exc}")
            return
        run = await self._plan(job, owner, request, state)
        race: Race[Candidate, tuple[ProviderResult, int], list[NewImage]] = Race(
            run.candidates,
            run=partial(self._run_candidate, run),
            accept=partial(self._accept, run),
            parallel=run.options.parallel,
            hedge_delay=partial(self._hedge_delay, run) if run.options.hedge else None,
            keep_going=partial(self._keep_going, run),
            errors=(ProviderError, ImageRejected, StorageError),
        )
        try:
            winner, images = await race.run()
        except RaceFailed as failed:
            await self._settle_race(run, race, None)
            await self.finisher.failed(run, self._final_error(run, failed))
            return
        await self._settle_race(run, race, winner)
        result, elapsed_ms = run.results[winner.provider.name]
        await self.finisher.succeeded(
            run,
            provider=winner.provider.name,
            result=result,
            provider_ms=elapsed_ms,
            images=images,
        )

    async def _plan(
        self, job: ClaimedJob, owner: str, request: GenerationRequest, state: RunState
    ) -> JobRun:
        """Resolve the options (request > account > settings) and plan the route."""
        control = self.control
        routing = await control.current()
        preferred, account_data = await self.store.account_routing(job.account_id)
        account = AccountRouting.parse(account_data, account_id=job.account_id)
        options = resolve_options(request, account, routing)
        names = self.providers.names()
        unavailable: dict[str, str] = {}
        for name, snap in (await control.breakers.snapshots(names)).items():
            if snap.state == BreakerState.OPEN and (snap.retry_in_s or 0) > 0:
                unavailable[name] = f"circuit breaker open (retry in {snap.retry_in_s:.1f} s)"
            elif snap.state == BreakerState.HALF_OPEN and snap.probes_in_flight > 0:
                unavailable[name] = "circuit breaker half-open: a probe is in flight"
        deferred = {
            name: f"asked to retry after {left:.1f} s"
            for name, left in (await control.outbound.paused(names)).items()
            if left > 0
        }

        def quality(provider: Provider) -> float | None:
            override = routing.providers.get(provider.name)
            return override.quality if override is not None else None

        candidates, trace = plan_route(
            request,
            self.providers,
            preferred=[*preferred, *account.preferred],
            policy=options.policy,
            chain=control.chain(),
            pool=routing.pool,
            priority=control.priority,
            enabled=control.enabled,
            quality=quality,
            latency_ms=lambda name: control.stats.latency_ms(name, LATENCY_POLICY_PERCENTILE),
            unavailable=unavailable,
            deferred=deferred,
            max_cost=options.max_cost,
            price=lambda provider, model: provider.price(provider_request(request, model)),
        )
        state.route = trace
        return JobRun(
            job=job,
            owner=owner,
            request=request,
            state=state,
            options=options,
            routing=routing,
            account_limits=account.outbound,
            candidates=candidates,
            deadline=Deadline(routing.deadline_s, clock=control.clock),
            plan={
                "policy": options.policy,
                "mode": "hedge" if options.hedge else ("race" if options.parallel > 1 else None),
                "candidates": [c.provider.name for c in candidates],
                "skipped": [
                    {"provider": e["provider"], "reason": e["reason"]}
                    for e in trace
                    if e["decision"] == "skipped"
                ],
                "config_version": control.version,
            },
        )

    def _keep_going(self, run: JobRun, candidate: Candidate, error: BaseException) -> bool:
        """After a refusal the route stops, unless the refusal policy sends it on."""
        if isinstance(error, Refused):
            return run.options.continue_after_refusal(run.request)
        return True

    def _trace(self, state: RunState, candidate: Candidate, decision: str, **extra: Any) -> None:
        """Update the candidate's entry in the decision trace (the generation's ``route``)."""
        entry = candidate.trace
        if not any(e is entry for e in state.route):
            entry.update(provider=candidate.provider.name, model=candidate.model)
            state.route.append(entry)
        entry.update(decision=decision, **extra)

    async def _run_candidate(
        self, run: JobRun, candidate: Candidate, how: str
    ) -> tuple[ProviderResult, int]:
        """One candidate, retries included; its trace entry says how it went."""
        job, provider = run.job, candidate.provider
        started = time.monotonic() - run.started
        self._trace(run.state, candidate, "running", how=how, started_ms=int(started * 1000))
        data: dict[str, Any] = {
            "provider": provider.name,
            "model": candidate.model,
            "reason": candidate.reason,
            "how": how,
            "estimate_usd": candidate.trace.get("estimate_usd"),
        }
        if not run.announced:
            run.announced = True
            data["plan"] = run.plan
        await self.event(
            job.id,
            "provider_selected",
            data,
            provider=provider.name,
            model=candidate.model,
            route=run.state.route,
        )
        try:
            result, elapsed_ms = await self._attempt(run, candidate)
        except ProviderError as exc:
            run.state.jobs.pop(provider.name, None)
            self._trace(run.state, candidate, "failed", error=exc.code, message=exc.message)
            if job.provider_job_provider == provider.name:
                await self.store.clear_provider_job(job.id)
            raise
        run.state.jobs.pop(provider.name, None)
        run.results[provider.name] = (result, elapsed_ms)
        self._trace(run.state, candidate, "answered", ms=elapsed_ms)
        return result, elapsed_ms

    async def _accept(
        self, run: JobRun, candidate: Candidate, answer: tuple[ProviderResult, int]
    ) -> list[NewImage]:
        """Materialize a racer's images (one racer at a time: the storage keys are shared)."""
        try:
            images = await self.materializer.materialize(run.job, run.request, answer[0])
        except (ProviderError, ImageRejected, StorageError) as exc:
            self._trace(run.state, candidate, "failed", error=exc.code, message=exc.message)
            raise
        self._trace(run.state, candidate, "succeeded", cost_usd=format_usd(answer[0].cost_usd))
        return images

    async def _attempt(self, run: JobRun, candidate: Candidate) -> tuple[ProviderResult, int]:
        """Call one provider until it answers, retrying what is worth retrying.

        Each attempt passes the breaker and the outbound limits (waiting for its turn),
        is timed out by the provider's timeout and the overall deadline, and leaves an
        event: ``retrying`` when another attempt follows, ``attempt_failed`` when not.
        """
        job, provider, control = run.job, candidate.provider, self.control
        name = provider.name
        policy = self.retry or control.retry_for(name)
        request = provider_request(run.request, candidate.model)
        timeout_s = control.timeout_for(name)
        attempts: list[dict[str, Any]] = candidate.trace.setdefault("attempts", [])
        attempt = 0
        while True:
            attempt += 1
            if run.deadline.remaining() <= 0:
                raise ProviderTimeout(
                    f"{name}: the deadline of {run.deadline.seconds:g} s passed",
                    provider=name,
                    code=DEADLINE_EXCEEDED,
                )
            permit, transitions = await control.breakers.allow(name)
            await self._breaker_events(run, transitions)
            if not permit.allowed:
                error = ProviderError(
                    f"{name}: circuit breaker {permit.state.value.replace('_', '-')}",
                    provider=name,
                    code="provider_unavailable",
                )
                attempts.append({"attempt": attempt, "outcome": "skipped", "error": error.code})
                raise error
            run.state.provider = name
            run.state.provider_job_id = None
            ctx = AttemptContext(
                job,
                name,
                run.state,
                http=self.http,
                settings=self.settings,
                store=self.store,
                storage=self.storage,
                events=self.job_events,
            )
            if ctx.provider_job_id:  # resuming a job a previous delivery submitted
                run.state.jobs[name] = ctx.provider_job_id
            failure: ProviderError | None = None
            sent = time.monotonic()
            try:
                # the deadline also bounds the wait for an outbound slot
                async with asyncio.timeout(max(0.001, run.deadline.remaining())):
                    async with control.outbound.slot(
                        name,
                        job.account_id,
                        account_limit=run.account_limits.get(name),
                        on_wait=partial(self._waiting, run),
                    ):
                        sent = time.monotonic()
                        result = await self._call(provider, request, ctx, timeout_s, run)
            except TimeoutError:
                failure = ProviderTimeout(
                    f"{name}: the deadline passed while waiting for an outbound slot",
                    provider=name,
                    code=DEADLINE_EXCEEDED,
                )
            except ProviderError as exc:
                failure = exc
            except BaseException as exc:  # cancelled (a race lost, a cancel) or a bug
                await control.breakers.record(name, permit, Outcome.NEUTRAL)
                outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
                attempts.append({"attempt": attempt, "outcome": outcome})
                raise
            ms = (time.monotonic() - sent) * 1000
            transitions = await control.breakers.record(
                name, permit, outcome_of(failure), failure.code if failure else None
            )
            if failure is None or failure.code != DEADLINE_EXCEEDED:
                control.stats.record(
                    name, ok=failure is None, latency_ms=ms, error=failure.code if failure else None
                )
            record: dict[str, Any] = {"attempt": attempt, "ms": int(ms)}
            attempts.append(record)
            await self._breaker_events(run, transitions)
            if failure is None:
                record["outcome"] = "succeeded"
                return result, int(ms)
            record.update(outcome="failed", error=failure.code)
            if isinstance(failure, ProviderRateLimited) and failure.retry_after:
                await control.outbound.pause(name, failure.retry_after)
            delay, why_not = self._retry_delay(run, policy, attempt, failure)
            info: dict[str, Any] = {
                "provider": name,
                "model": candidate.model,
                "attempt": attempt,
                "error": failure.code,
                "message": failure.message,
                "ms": int(ms),
            }
            if failure.retry_after is not None:
                info["retry_after_s"] = failure.retry_after
            if delay is None:
                await self.event(job.id, "attempt_failed", {**info, "final": why_not})
                raise failure
            run.retries += 1
            await self.event(
                job.id,
                "retrying",
                {**info, "delay_s": round(delay, 3)},
                retry_count=run.retries,
                last_retry_at=utcnow(),
            )
            await run.deadline.clock.sleep(delay)

    async def _call(
        self,
        provider: Provider,
        request: ProviderRequest,
        ctx: AttemptContext,
        timeout_s: float,
        run: JobRun,
    ) -> ProviderResult:
        timeout = max(0.001, min(timeout_s, run.deadline.remaining()))
        ctx.simulated = self.ticker.track(
            run.job.id, run.state.progress, self._expected_s(provider.name)
        )
        try:
            async with asyncio.timeout(timeout):
                result = await provider.generate(request, ctx)
        except TimeoutError:
            if timeout < timeout_s:
                raise ProviderTimeout(
                    f"{provider.name}: no result before the deadline",
                    provider=provider.name,
                    code=DEADLINE_EXCEEDED,
                ) from None
            raise ProviderTimeout(
                f"{provider.name}: no result within {timeout_s:g} s", provider=provider.name
            ) from None
        finally:
            if ctx.simulated is not None:
                ctx.simulated.stop()
        if not result.images:
            raise ProviderError(
                f"{provider.name}: no image returned", provider=provider.name, code="no_image"
            )
        return result

    def _expected_s(self, provider: str) -> float:
        """How long the provider's answer is expected to take: its observed median, else
        the configured guess (the simulated progress curve's time scale)."""
        observed = self.control.stats.latency_ms(provider, LATENCY_POLICY_PERCENTILE)
        if observed is None:
            return self.settings.simulated_progress_expected_s
        return observed / 1000

    def _retry_delay(
        self, run: JobRun, policy: RetryPolicy, attempt: int, error: ProviderError
    ) -> tuple[float | None, str]:
        """Seconds before the next attempt on the same provider, or None and why not."""
        if not error.retryable:
            return None, "not retryable"
        if attempt >= policy.attempts:
            return None, f"{policy.attempts} attempts made"
        if error.retry_after is not None and error.retry_after > policy.max_retry_after_s:
            return None, f"Retry-After {error.retry_after:g} s is too long"
        delay = policy.delay(attempt, error.retry_after)
        if delay >= run.deadline.remaining():
            return None, "the deadline would pass"
        return delay, ""

    def _hedge_delay(self, run: JobRun, candidate: Candidate) -> float:
        if run.options.hedge_delay_s is not None:
            return run.options.hedge_delay_s
        hedge = run.routing.hedge
        observed = self.control.stats.latency_ms(candidate.provider.name, hedge.percentile)
        delay = hedge.default_delay_s if observed is None else observed / 1000
        return min(hedge.max_delay_s, max(hedge.min_delay_s, delay))

    async def _waiting(self, run: JobRun, info: WaitInfo) -> None:
        await self.event(run.job.id, "waiting", info.as_dict())

    async def _breaker_events(self, run: JobRun, transitions: list[Transition]) -> None:
        for transition in transitions:
            await self.event(run.job.id, "breaker", transition.as_dict())

    async def _settle_race(
        self,
        run: JobRun,
        race: Race[Candidate, tuple[ProviderResult, int], list[NewImage]],
        winner: Candidate | None,
    ) -> None:
        """Record the losers (and what they cost), cancel them at the provider."""
        losers: list[dict[str, Any]] = []
        total = Decimal("0")
        for candidate, answer in race.lost:
            name = candidate.provider.name
            if answer is None:
                cost, basis = candidate.estimate_usd, "estimate"
                self._trace(run.state, candidate, "cancelled", cost_usd=format_usd(cost))
                job_id = run.state.jobs.pop(name, None)
                if job_id is not None:
                    self.control.spawn(self._cancel_at_provider(run, candidate.provider, job_id))
            else:
                reported = answer[0].cost_usd
                cost = reported if reported is not None else candidate.estimate_usd
                basis = "reported" if reported is not None else "estimate"
                self._trace(run.state, candidate, "lost", cost_usd=format_usd(cost))
            candidate.trace["cost_basis"] = basis
            total += cost or Decimal("0")
            losers.append(
                {
                    "provider": name,
                    "decision": candidate.trace["decision"],
                    "cost_usd": format_usd(cost),
                }
            )
        for candidate in race.not_tried:
            why = "a result was accepted" if winner is not None else "stopped by a refusal"
            self._trace(run.state, candidate, "not_tried", reason=why)
        if len(race.started) > 1:
            summary = {
                "winner": winner.provider.name if winner else None,
                "started": [
                    {"provider": s.candidate.provider.name, "how": s.how} for s in race.started
                ],
                "losers": losers,
                "losers_cost_usd": format_usd(total),
            }
            await self.event(run.job.id, "race", summary)

    async def _cancel_at_provider(self, run: JobRun, provider: Provider, job_id: str) -> None:
        try:
            async with asyncio.timeout(PROVIDER_CANCEL_TIMEOUT_S):
                await provider.cancel(job_id)
        except Exception:  # best effort: the result is simply not used
            log.warning("provider_cancel_failed", generation_id=run.job.id, provider=provider.name)

    def _final_error(self, run: JobRun, failed: RaceFailed) -> PixelgateError:
        if failed.errors:
            chosen = failed.errors[-1]
            if failed.stopped_by is not None:
                chosen = next(e for e in failed.errors if e[0] is failed.stopped_by)
            error = chosen[1]
            if isinstance(error, PixelgateError):
                return error
            return ProviderError(str(error))
        skipped = [e for e in run.state.route if e.get("decision") == "skipped"]
        reasons = "; ".join(f"{e['provider']}: {e['reason']}" for e in skipped)
        if any("circuit breaker" in str(e.get("reason")) for e in skipped):
            return ProviderError(f"no provider available: {reasons}", code="provider_unavailable")
        message = "no configured provider can serve this request"
        return ValidationFailed(
            "provider", f"{message}: {reasons}" if reasons else message, code="no_provider"
        )

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


def _entity_pairs(request: GenerationRequest) -> list[tuple[str, str]]:
    return [(e.type, e.id) for e in request.entities or ()]
