"""Admission: validate, price and persist a request in one transaction, then hand it over.

A rejected request writes nothing and charges nothing. A cache hit is done at
admission; anything else wakes a worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pixelgate.config import Settings
from pixelgate.core.bus import EventBus
from pixelgate.core.cache import cache_key, wants_cache
from pixelgate.core.finishing import Finisher
from pixelgate.core.models import AccountView, GenerationRequest
from pixelgate.core.planning import RoutePlan, RoutePlanner
from pixelgate.core.ports import RecordStore
from pixelgate.core.pricing import CreditRules, credits_for
from pixelgate.core.records import AdmitResult, BatchView, CacheLookup, NewGeneration, Quota
from pixelgate.core.routing import OVER_COST_CAP, PRICE_UNKNOWN, check_explicit
from pixelgate.core.templates import final_prompt, parse_template
from pixelgate.core.urls import refuse_unsafe_urls
from pixelgate.errors import UnsafeURL, ValidationFailed
from pixelgate.media.fetch import SafeFetcher
from pixelgate.money import format_usd
from pixelgate.observability import metrics, tracing
from pixelgate.providers.registry import ProviderSet
from pixelgate.resilience.inbound import RequestLimiter

if TYPE_CHECKING:
    from pixelgate.core.handoff import LocalWorker

__all__ = ["Admission", "Caller", "Estimate"]

WEBHOOK_CHECK_TIMEOUT_S = 5.0


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
    #: the plan it was priced with (handed to this process's run of the job)
    plan: RoutePlan | None = field(default=None, repr=False, compare=False)


class Admission:
    """Validates, prices and admits requests and batches; cancels batches."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: RecordStore,
        providers: ProviderSet,
        bus: EventBus,
        limiter: RequestLimiter,
        credit_rules: CreditRules,
        fetcher: SafeFetcher,
        finisher: Finisher,
        planner: RoutePlanner,
    ) -> None:
        self.planner = planner
        self.settings = settings
        self.store = store
        self.providers = providers
        self.bus = bus
        self.limiter = limiter
        self.credit_rules = credit_rules
        self.fetcher = fetcher
        self.finisher = finisher
        #: this process's worker, when it takes jobs straight from admission
        self.local_worker: LocalWorker | None = None

    async def prepare(self, caller: Caller, request: GenerationRequest) -> GenerationRequest:
        """Every check admission makes before pricing (template and context applied,
        configuration limits, inputs and URLs): the estimate runs the same ones.

        Raises:
            ValidationFailed, UnsafeURL: naming the field.
        """
        request = await self.resolve_prompt(caller, request)
        self.validate(request)
        await self._check_user_urls(caller, request)
        return request

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
        request = await self.prepare(caller, request)
        account = await self.store.get_account_cached(caller.account_id)
        estimate = await self.estimate(request, account)
        tier = self.settings.tier(account.tier)
        payload = request.model_dump(mode="json", exclude_none=True)
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        tracing.inject(payload)  # the trace context travels with the job (after the hash)
        quota = Quota.of_tier(tier)
        # a free slot of this process's worker: the job is admitted leased to it and
        # handed over in memory (no claim, no poll)
        worker = self.local_worker
        lease_to = worker.owner if worker is not None and worker.reserve() else None
        try:
            async with self.limiter.admitting(account.id, tier.requests_per_minute):
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
                    lease_to=lease_to,
                    lease_s=self.settings.lease_seconds,
                )
        except BaseException:
            if lease_to is not None and worker is not None:
                worker.unreserve()
            raise
        metrics.admitted(result, wants_cache(request, account))
        if result.job is not None and worker is not None:
            self.finisher.expect(result.job.id)
            if estimate.plan is not None:
                self.planner.hand_over(result.job.id, estimate.plan, account, request)
            worker.accept(result.job)
            return result
        if lease_to is not None and worker is not None:
            worker.unreserve()  # a replay, a cache hit or a follower: nothing to run here
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
                request = await self.prepare(caller, request)
                estimate = await self.estimate(request, account)
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
        quota = Quota.of_tier(tier)
        digest = hashlib.sha256(
            json.dumps(
                [concurrency, metadata or {}, *(m.request for m in members)], sort_keys=True
            ).encode()
        ).hexdigest()
        async with self.limiter.admitting(account.id, tier.requests_per_minute):
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

    async def estimate(self, request: GenerationRequest, account: AccountView) -> Estimate:
        """Credits and USD the request costs: the same numbers admission charges, priced
        at the provider the run will try first (the same plan, ``core/planning.py``).

        Raises:
            ValidationFailed: the cost cap excludes every capable provider
                (``no_provider_within_budget``), or a cost cap or a daily budget applies
                and no capable provider has a price for the model (``price_unknown``).
        """
        credits = credits_for(request, self.credit_rules)
        plan = await self.planner.plan(request, account)
        if not plan.candidates:
            codes = {entry.get("code") for entry in plan.trace}
            if OVER_COST_CAP in codes:
                raise ValidationFailed(
                    "max_cost_per_image",
                    f"no provider can serve this request for at most "
                    f"${plan.options.max_cost} per image",
                    code="no_provider_within_budget",
                )
            if PRICE_UNKNOWN in codes:
                raise ValidationFailed(
                    "model",
                    "no capable provider has a price for this model, and a cost cap or a "
                    "daily budget needs one",
                    code=PRICE_UNKNOWN,
                )
        first = plan.candidates[0] if plan.candidates else None
        return Estimate(
            credits=credits,
            usd=plan.estimate_usd,
            provider=first.provider.name if first else None,
            model=first.model if first else None,
            candidates=[
                {"provider": c.provider.name, "model": c.model, "usd": format_usd(c.estimate_usd)}
                for c in plan.candidates
            ],
            plan=plan,
        )

    def _cache_lookup(self, request: GenerationRequest, account: AccountView) -> CacheLookup | None:
        key = cache_key(request)
        if key is None:
            return None
        return CacheLookup(
            key=key,
            use=wants_cache(request, account),
            credits=self.settings.credits.cache_price,
        )

    async def _check_user_urls(self, caller: Caller, request: GenerationRequest) -> None:
        """Uploaded inputs must be the caller's; user URLs must be public (IP literals
        decided here, the webhook's host resolved too)."""
        refuse_unsafe_urls(request, self.settings)
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
