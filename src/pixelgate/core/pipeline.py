"""The one generation pipeline: admission → dispatch → execute → materialize → finish.

Every entry point (native, seed-compatible, OpenAI-compatible, CLI, Python API)
goes through :meth:`Pipeline.admit`; every worker through :meth:`Pipeline.execute`.
:class:`Pipeline` is the façade that builds and wires one object per stage:

- :class:`~pixelgate.core.admission.Admission` — validate, price, admit, batches;
- :class:`~pixelgate.core.execution.Executor` — plan the route, race the candidates,
  each called by the :class:`~pixelgate.core.attempts.AttemptRunner`;
- :class:`~pixelgate.core.materialize.Materializer` — input images, provider bytes →
  stored images;
- :class:`~pixelgate.core.finishing.Finisher` — finishing transactions, finish hooks,
  cancel, wait;
- :class:`~pixelgate.core.context.JobEvents` — the events of running jobs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixelgate.config import Settings
from pixelgate.core.admission import Admission, Caller, Estimate
from pixelgate.core.attempts import AttemptRunner
from pixelgate.core.bus import EventBus
from pixelgate.core.context import JobEvents
from pixelgate.core.event_writer import EventBuffer
from pixelgate.core.execution import Executor
from pixelgate.core.finish_hooks import Finished, FinishHook
from pixelgate.core.finishing import Finisher
from pixelgate.core.materialize import Materializer
from pixelgate.core.models import AccountView, GenerationRequest, GenerationView, Status
from pixelgate.core.planning import RoutePlanner
from pixelgate.core.ports import RecordStore
from pixelgate.core.pricing import CreditRules
from pixelgate.core.progress import ProgressTicker
from pixelgate.core.records import AdmitResult, BatchView, ClaimedJob, RunningEvent
from pixelgate.core.routing import RetryPolicy
from pixelgate.errors import Conflict
from pixelgate.media.fetch import SafeFetcher
from pixelgate.observability import tracing
from pixelgate.providers.base import HttpClient
from pixelgate.providers.registry import ProviderSet
from pixelgate.resilience.inbound import RequestLimiter
from pixelgate.resilience.routing_control import RoutingControl
from pixelgate.resilience.shared import SharedState
from pixelgate.storage.base import Storage

if TYPE_CHECKING:
    from pixelgate.core.handoff import LocalWorker

__all__ = ["AdmitResult", "Caller", "Estimate", "FinishHook", "Finished", "Pipeline"]


class Pipeline:
    """Admits requests and executes jobs; shared by the API, the CLI and workers."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: RecordStore,
        storage: Storage,
        providers: ProviderSet,
        bus: EventBus,
        http: HttpClient,
        retry: RetryPolicy | None = None,
        limiter: RequestLimiter | None = None,
        shared: SharedState | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.providers = providers
        self.bus = bus
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
        self.attempts = AttemptRunner(
            settings=settings,
            store=store,
            storage=storage,
            control=self.control,
            events=self.job_events,
            ticker=self.ticker,
            http=http,
            retry=retry,
        )
        #: one way to plan a route: the run plans with it, admission prices with it
        self.planner = RoutePlanner(providers, self.control)
        self.executor = Executor(
            store=store,
            bus=bus,
            providers=providers,
            control=self.control,
            planner=self.planner,
            events=self.job_events,
            attempts=self.attempts,
            materializer=self.materializer,
            finisher=self.finisher,
        )
        self.admission = Admission(
            settings=settings,
            store=store,
            providers=providers,
            bus=bus,
            limiter=self.limiter,
            credit_rules=self.credit_rules,
            fetcher=self.fetcher,
            finisher=self.finisher,
            planner=self.planner,
        )

    @property
    def http(self) -> HttpClient:
        """The pooled HTTP client adapters and result downloads use."""
        return self.materializer.http

    @http.setter
    def http(self, client: HttpClient) -> None:
        self.materializer.http = client
        self.attempts.http = client

    @property
    def retry(self) -> RetryPolicy | None:
        """Overrides the configured retry policy when set (tests, embedding)."""
        return self.attempts.retry

    @retry.setter
    def retry(self, policy: RetryPolicy | None) -> None:
        self.attempts.retry = policy

    @property
    def local_worker(self) -> LocalWorker | None:
        """This process's worker, when admission hands jobs straight to it."""
        return self.admission.local_worker

    @local_worker.setter
    def local_worker(self, worker: LocalWorker | None) -> None:
        self.admission.local_worker = worker

    @property
    def finish_hooks(self) -> list[FinishHook]:
        """Run once a generation reaches a terminal state; append to add one."""
        return self.finisher.hooks

    # Admission -----------------------------------------------------------------

    def validate(self, request: GenerationRequest) -> None:
        """Checks that depend on configuration; raises ``ValidationFailed`` naming the field."""
        self.admission.validate(request)

    async def admit(
        self,
        caller: Caller,
        request: GenerationRequest,
        *,
        source: str = "native",
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> AdmitResult:
        """Validate, price and persist a request (one transaction), then wake a worker."""
        with tracing.span("generation.admit", **{"pixelgate.source": source}):
            return await self.admission.admit(
                caller,
                request,
                source=source,
                idempotency_key=idempotency_key,
                request_id=request_id,
            )

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
        """Admit a batch: every request becomes a normal generation, all or none."""
        return await self.admission.admit_batch(
            caller,
            requests,
            concurrency=concurrency,
            metadata=metadata,
            source=source,
            request_id=request_id,
            idempotency_key=idempotency_key,
        )

    async def cancel_batch(self, batch_id: str, account_id: str | None) -> BatchView:
        """Cancel a batch's unfinished members (running ones by their workers).

        Raises:
            NotFound: no such batch for this account.
            Conflict: ``already_finished``: every member had ended before the cancel.
        """
        batch = await self.store.get_batch(batch_id, account_id=account_id)
        if batch.status == "completed":
            raise Conflict("batch is already completed", code="already_finished")
        return await self.admission.cancel_batch(batch_id, account_id)

    async def prepare(self, caller: Caller, request: GenerationRequest) -> GenerationRequest:
        """Every check admission makes before pricing; returns the request as admitted."""
        return await self.admission.prepare(caller, request)

    async def estimate(self, request: GenerationRequest, account: AccountView) -> Estimate:
        """Credits and USD the request costs: the same numbers admission charges."""
        return await self.admission.estimate(request, account)

    # Waiting and finishing -----------------------------------------------------

    async def wait(self, generation_id: str, timeout: float) -> GenerationView:
        """The generation once terminal, or as it is when ``timeout`` passes."""
        return await self.finisher.wait(generation_id, timeout)

    async def finished(
        self,
        generation_id: str,
        status: Status | None = None,
        job: ClaimedJob | None = None,
        view: GenerationView | None = None,
    ) -> None:
        """Announce a terminal state: wake waiters, then run the finish hooks in the background."""
        await self.finisher.finished(generation_id, status, job, view)

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
        await self.executor.execute(job, owner)

    async def cancel_running(self, job: ClaimedJob, owner: str) -> None:
        """Finish a job whose cancellation was requested, cancelling it at the provider."""
        await self.executor.cancel_running(job, owner)
