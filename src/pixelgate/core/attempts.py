"""Calling one provider for a job until it answers: attempts, retries and their limits.

Each attempt passes the circuit breaker and the outbound limits (waiting for its turn),
is timed out by the provider's timeout and the job's deadline, is recorded in the
breaker and the latency statistics, and leaves an event when it fails.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from pixelgate.config import Settings
from pixelgate.core.context import AttemptContext, JobEvents, JobRun
from pixelgate.core.materialize import provider_request
from pixelgate.core.ports import AttemptRecords
from pixelgate.core.progress import ProgressTicker
from pixelgate.core.routing import Candidate, RetryPolicy
from pixelgate.errors import ProviderError, ProviderRateLimited, ProviderTimeout
from pixelgate.observability import hooks as observe
from pixelgate.providers.base import HttpClient, Provider, ProviderRequest, ProviderResult
from pixelgate.resilience.breaker import DEADLINE_EXCEEDED, Outcome, Transition, outcome_of
from pixelgate.resilience.outbound import FREE_SLOT, WaitInfo
from pixelgate.resilience.routing_control import RoutingControl
from pixelgate.storage.base import Storage

__all__ = ["LATENCY_POLICY_PERCENTILE", "AttemptRunner"]

#: the ``latency`` policy ranks providers by their observed median
LATENCY_POLICY_PERCENTILE = 0.5


class AttemptRunner:
    """Calls one candidate provider, retrying what is worth retrying."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: AttemptRecords,
        storage: Storage,
        control: RoutingControl,
        events: JobEvents,
        ticker: ProgressTicker,
        http: HttpClient,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.control = control
        self.events = events
        self.ticker = ticker
        #: handed to adapters in their context
        self.http = http
        #: overrides the configured retry policy when set (tests, embedding)
        self.retry = retry

    async def call(self, run: JobRun, candidate: Candidate) -> tuple[ProviderResult, int]:
        """Call one provider until it answers; its result and how long the answer took (ms).

        Each attempt leaves an event: ``retrying`` when another attempt follows,
        ``attempt_failed`` when not.

        Raises:
            ProviderError: the last attempt's error (or the breaker's, or the deadline's).
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
                events=self.events,
            )
            if ctx.provider_job_id:  # resuming a job a previous delivery submitted
                run.state.jobs[name] = ctx.provider_job_id
            failure: ProviderError | None = None
            sent = time.monotonic()
            slot = control.outbound.slot(
                name,
                job.account_id,
                account_limit=run.account_limits.get(name),
                on_wait=partial(self._waiting, run),
            )
            try:
                if slot is FREE_SLOT:  # nothing to wait for: no timeout around the call's own
                    result = await self._call(provider, request, ctx, timeout_s, run)
                else:
                    # the deadline also bounds the wait for an outbound slot
                    async with asyncio.timeout(max(0.001, run.deadline.remaining())) as wait:
                        async with slot:
                            wait.reschedule(None)  # in: the call's own timeout bounds it now
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
            observe.attempt_ended(name, candidate.model, sent, failure, attempt)
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
                await self.events.event(job.id, "attempt_failed", {**info, "final": why_not})
                raise failure
            run.retries += 1
            await self.events.event(
                job.id,
                "retrying",
                {**info, "delay_s": round(delay, 3)},
                retry_count=run.retries,
                last_retry_at=self.store.clock(),
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

    async def _waiting(self, run: JobRun, info: WaitInfo) -> None:
        await self.events.event(run.job.id, "waiting", info.as_dict())

    async def _breaker_events(self, run: JobRun, transitions: list[Transition]) -> None:
        for transition in transitions:
            await self.events.event(run.job.id, "breaker", transition.as_dict())
