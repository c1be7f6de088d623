"""The one loop of asynchronous provider APIs: submit, save the job id, poll, finish.

fal, Replicate, AI Horde, ComfyUI and BFL describe their API as a :class:`PollingJob`
(``submit``, ``poll``, ``result``); :func:`run_polling_job` does the rest, the same way
for all of them:

* **resume**: a job id saved by an earlier run (``ctx.provider_job_id``) is polled, never
  submitted (and paid for) again;
* the id is saved through the job context *before* the first poll;
* **schedule**: ``poll_interval_s``, growing by :data:`POLL_BACKOFF` up to
  ``poll_max_interval_s`` (default five times the interval); a wait the provider asks for
  (``Retry-After`` on a 429 while polling, or :attr:`Pending.retry_after`) replaces the
  next delay; :attr:`JobRun.wake` cuts a delay short (a websocket said "done");
* **deadline** (``timeout_s``): past it the provider job is cancelled at the provider and
  ``ProviderTimeout`` raised; a plain task cancellation (worker shutdown) leaves the job
  running so that a restart resumes it;
* **progress**: reported only when it changes and, if asked, never backwards.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

from pixelgate.providers.base import (
    JobContext,
    Provider,
    ProviderError,
    ProviderRateLimited,
    ProviderResult,
)

__all__ = [
    "CANCEL_TIMEOUT_S",
    "POLL_BACKOFF",
    "JobRun",
    "Pending",
    "PollingJob",
    "Submitted",
    "cancel_quietly",
    "poll_delays",
    "run_polling_job",
]

log = structlog.get_logger(__name__)

#: each pending poll waits this much longer than the one before, up to the maximum
POLL_BACKOFF = 1.5
#: without ``poll_max_interval_s``, the delay grows to this many times ``poll_interval_s``
DEFAULT_MAX_INTERVAL_FACTOR = 5.0
#: a best-effort cancel at the provider gives up after this long
CANCEL_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class Pending:
    """A poll saw the job still running: what to report, and a wait the provider asked for."""

    percent: int | None = None
    message: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Submitted(Generic[T]):
    """A submitted job: the provider's id (saved for resume) and, when the submit answer
    already says how the job stands (Replicate's ``Prefer: wait``), that first state."""

    job_id: str
    state: T | Pending | None = None


@dataclass
class JobRun:
    """One run of one job: its id once known, its last progress, a wake-up for the poller."""

    ctx: JobContext
    #: never report a lower percentage than already reported (two sources report)
    monotonic: bool = False
    job_id: str | None = None
    last_progress: tuple[int, str | None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def report(self, percent: int, message: str | None = None) -> None:
        """Pass progress on to the job context when it changed."""
        last = self.last_progress
        if self.monotonic and last is not None and percent < last[0]:
            return
        if (percent, message) != last:
            self.last_progress = (percent, message)
            await self.ctx.progress(percent, message)


class PollingJob(abc.ABC, Generic[T]):
    """How one asynchronous provider API submits, polls and finishes a job.

    ``poll`` answers :class:`Pending` while the job runs and the finished state ``T``
    (whatever the adapter needs) once it is done; ``result`` turns that state into images,
    downloading them first where they must be fetched at once.
    """

    @abc.abstractmethod
    async def submit(self, run: JobRun) -> Submitted[T]:
        """Send the job to the provider; nothing is saved yet when this returns."""

    @abc.abstractmethod
    async def poll(self, run: JobRun, job_id: str) -> T | Pending:
        """Look at the job once."""

    @abc.abstractmethod
    async def result(self, run: JobRun, job_id: str, done: T) -> ProviderResult:
        """The provider's answer for a finished job (or its failure, raised)."""


async def run_polling_job(
    provider: Provider, ctx: JobContext, job: PollingJob[T], *, monotonic: bool = False
) -> ProviderResult:
    """Run ``job`` to its result within ``provider.settings.timeout_s`` (see the module doc)."""
    run = JobRun(ctx, monotonic=monotonic)

    async def work() -> ProviderResult:
        first: T | Pending | None = None
        if ctx.provider_job_id:
            run.job_id = ctx.provider_job_id
        else:
            submitted = await job.submit(run)
            run.job_id = submitted.job_id
            await ctx.save_provider_job(submitted.job_id)
            first = submitted.state
        job_id = run.job_id
        done = await _poll(provider, job, run, job_id, first)
        return await job.result(run, job_id, done)

    return await provider._run_job(work, lambda: run.job_id)


async def _poll(
    provider: Provider, job: PollingJob[T], run: JobRun, job_id: str, first: T | Pending | None
) -> T:
    delays = poll_delays(provider.settings.poll_interval_s, _max_interval(provider))
    state = first
    while True:
        wait: float | None = None
        if state is None:
            try:
                state = await job.poll(run, job_id)
            except ProviderRateLimited as exc:
                # Polling is free at every provider we know: a 429 here only asks us to slow
                # down, and the deadline still bounds the job.
                wait = exc.retry_after
        if state is not None and not isinstance(state, Pending):
            return state
        if isinstance(state, Pending):
            if state.percent is not None:
                await run.report(state.percent, state.message)
            wait = state.retry_after
        delay = next(delays)
        await _sleep(run, max(delay, wait or 0.0))
        state = None


def poll_delays(interval: float, maximum: float) -> Iterator[float]:
    """The delays between polls: ``interval``, then growing by :data:`POLL_BACKOFF`."""
    delay, maximum = interval, max(interval, maximum)
    while True:
        yield delay
        delay = min(maximum, delay * POLL_BACKOFF)


def _max_interval(provider: Provider) -> float:
    settings = provider.settings
    if settings.poll_max_interval_s is not None:
        return settings.poll_max_interval_s
    return settings.poll_interval_s * DEFAULT_MAX_INTERVAL_FACTOR


async def _sleep(run: JobRun, delay: float) -> None:
    run.wake.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.wake.wait(), delay)


async def cancel_quietly(
    provider: str, job_id: str, action: Callable[[], Awaitable[object]]
) -> None:
    """Run a best-effort cancel at the provider: bounded in time, logged, never raised."""
    try:
        async with asyncio.timeout(CANCEL_TIMEOUT_S):
            await action()
    except (ProviderError, TimeoutError) as exc:
        log.warning(
            "provider_cancel_failed", provider=provider, job_id=job_id, error=type(exc).__name__
        )
