"""Running a claimed job: plan the route, race or walk its candidates, finish it.

The route is planned from the request, the account and the live routing configuration
(open breakers and paused providers are skipped). Candidates run one after another or
raced (``parallel``) or hedged; each is called by the :class:`AttemptRunner`, the first
valid answer is materialized, the losers are recorded with what they cost and cancelled
at their provider. The job's ``route`` is the decision trace of all this.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from functools import partial
from typing import Any

import structlog

from pixelgate.core.attempts import AttemptRunner
from pixelgate.core.bus import EventBus
from pixelgate.core.context import JobEvents, JobRun, RunState
from pixelgate.core.finishing import Finisher
from pixelgate.core.materialize import Materializer
from pixelgate.core.models import GenerationRequest, Status
from pixelgate.core.planning import RoutePlanner
from pixelgate.core.ports import ExecutionRecords
from pixelgate.core.race import Race, RaceFailed
from pixelgate.core.records import ClaimedJob, NewImage
from pixelgate.core.routing import Candidate, Deadline, format_usd
from pixelgate.errors import (
    ImageRejected,
    PixelgateError,
    ProviderError,
    Refused,
    StorageError,
    ValidationFailed,
)
from pixelgate.providers.base import Provider, ProviderResult
from pixelgate.providers.registry import ProviderSet
from pixelgate.resilience.routing_control import RoutingControl

__all__ = ["Executor"]

log = structlog.get_logger("pixelgate.pipeline")

PROVIDER_CANCEL_TIMEOUT_S = 5.0

#: a race of candidates, their answers (result, ms) and the winner's stored images
JobRace = Race[Candidate, tuple[ProviderResult, int], list[NewImage]]


class Executor:
    """Runs claimed jobs to a terminal state; knows which jobs run here."""

    def __init__(
        self,
        *,
        store: ExecutionRecords,
        bus: EventBus,
        providers: ProviderSet,
        control: RoutingControl,
        planner: RoutePlanner,
        events: JobEvents,
        attempts: AttemptRunner,
        materializer: Materializer,
        finisher: Finisher,
    ) -> None:
        self.store = store
        self.bus = bus
        self.providers = providers
        self.control = control
        self.planner = planner
        self.events = events
        self.attempts = attempts
        self.materializer = materializer
        self.finisher = finisher
        self._running: dict[str, RunState] = {}

    async def execute(self, job: ClaimedJob, owner: str) -> None:
        """Run one claimed job to a terminal state (or leave it for a re-run if cancelled)."""
        state = RunState()
        self._running[job.id] = state
        if job.handed_over:
            # no claim wrote its start: it goes with the job's first events (or its end)
            await self.events.event(
                job.id,
                "started",
                {"delivery": job.deliveries},
                status=Status.PROCESSING.value,
                started_at=self.store.clock(),
            )
        else:
            await self.bus.publish(job.id)  # the "started" event written by the claim
        try:
            try:
                await self.materializer.load_inputs(job)
            except PixelgateError as exc:
                log.info("inputs_unavailable", generation_id=job.id, code=exc.code)
                await self.finisher.fail(job, owner, exc.code, exc.message)
                return
            await self._execute(job, owner, state)
        finally:
            self._running.pop(job.id, None)
            self.finisher.forget(job.id)

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
        request = self.planner.handed_request(job.id)
        if request is None:
            try:
                request = GenerationRequest.model_validate(job.request)
            except ValueError as exc:
                await self.finisher.fail(
                    job, owner, "invalid_request", f"stored request is invalid: {exc}"
                )
                return
        run = await self._plan(job, owner, request, state)
        race: JobRace = Race(
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
        account = await self.store.get_account_cached(job.account_id)
        plan = await self.planner.plan(request, account, live=True, generation_id=job.id)
        options = plan.options
        state.route = plan.trace
        return JobRun(
            job=job,
            owner=owner,
            request=request,
            state=state,
            options=options,
            routing=plan.routing,
            account_limits=plan.account.outbound,
            candidates=plan.candidates,
            deadline=Deadline(plan.routing.deadline_s, clock=self.control.clock),
            plan={
                "policy": options.policy,
                "mode": "hedge" if options.hedge else ("race" if options.parallel > 1 else None),
                "candidates": [c.provider.name for c in plan.candidates],
                "skipped": [
                    {"provider": e["provider"], "reason": e["reason"]}
                    for e in plan.trace
                    if e["decision"] == "skipped"
                ],
                "config_version": self.control.version,
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
        await self.events.event(
            job.id,
            "provider_selected",
            data,
            provider=provider.name,
            model=candidate.model,
            route=run.state.route,
        )
        try:
            result, elapsed_ms = await self.attempts.call(run, candidate)
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

    def _hedge_delay(self, run: JobRun, candidate: Candidate) -> float:
        if run.options.hedge_delay_s is not None:
            return run.options.hedge_delay_s
        hedge = run.routing.hedge
        observed = self.control.stats.latency_ms(candidate.provider.name, hedge.percentile)
        delay = hedge.default_delay_s if observed is None else observed / 1000
        return min(hedge.max_delay_s, max(hedge.min_delay_s, delay))

    async def _settle_race(self, run: JobRun, race: JobRace, winner: Candidate | None) -> None:
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
            await self.events.event(run.job.id, "race", summary)

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
