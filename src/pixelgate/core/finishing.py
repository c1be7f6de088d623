"""The end of a job: the finishing transactions, announcing them, waiting for them.

Each finish (succeeded, failed, canceled) is one store transaction that also writes the
job's events still waiting in the buffer, and answers the final view. A finish that
happened is announced by :meth:`Finisher.finished`: waiters wake (a waiter for a job
this process runs gets the final view from memory: no read), then the finish hooks
(webhooks, e-mail, cache followers; :mod:`pixelgate.core.finish_hooks` says what they are
handed) run in the background.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

import structlog

from pixelgate.core.bus import EventBus
from pixelgate.core.context import JobEvents, JobRun
from pixelgate.core.finish_hooks import Finished, FinishHook, skips
from pixelgate.core.materialize import DEFAULT_IMAGE_PROVIDER, Materializer
from pixelgate.core.models import GenerationView, Status
from pixelgate.core.ports import FinishRecords
from pixelgate.core.records import ClaimedJob, NewImage
from pixelgate.errors import PixelgateError
from pixelgate.observability import hooks as observe
from pixelgate.providers.base import ProviderResult
from pixelgate.providers.placeholder import MODEL as PLACEHOLDER_MODEL

__all__ = ["CANCEL_WAIT_S", "Finisher"]

log = structlog.get_logger("pixelgate.pipeline")

#: how long ``cancel`` waits for a running job's worker to stop it
CANCEL_WAIT_S = 2.0
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")


class Finisher:
    """Finishes jobs, announces terminal states and runs the finish hooks."""

    def __init__(
        self,
        *,
        store: FinishRecords,
        bus: EventBus,
        events: JobEvents,
        materializer: Materializer,
    ) -> None:
        self.store = store
        self.bus = bus
        self.events = events
        self.materializer = materializer
        #: run once a generation reaches a terminal state (the runtime adds more)
        self.hooks: list[FinishHook] = [_FollowersHook(self)]
        self._hook_tasks: set[asyncio.Task[None]] = set()
        #: final views of jobs this process's worker runs, for in-memory waits
        self._outcomes: dict[str, asyncio.Future[GenerationView]] = {}

    def expect(self, generation_id: str) -> None:
        """A job this process will run: its waiters get the final view from memory."""
        self._outcomes[generation_id] = asyncio.get_running_loop().create_future()

    def forget(self, generation_id: str) -> None:
        """The job's run here ended without a final view (lease lost, shutdown):
        its waiters read the row instead."""
        outcome = self._outcomes.pop(generation_id, None)
        if outcome is not None and not outcome.done():
            outcome.cancel()

    # Finishing -----------------------------------------------------------------

    async def succeeded(
        self,
        run: JobRun,
        *,
        provider: str,
        result: ProviderResult,
        provider_ms: int,
        images: list[NewImage],
    ) -> None:
        """Finish a job with the winning provider's stored images, usage and cost."""
        job = run.job
        view = await self.store.finish_succeeded(
            job.id,
            run.owner,
            provider=provider,
            model=result.model,
            images=images,
            cost_usd=result.cost_usd,
            provider_ms=provider_ms,
            route=run.state.route,
            account_id=job.account_id,
            pending=await self.events.take(job.id),
            account_name=job.account_name,
            request=job.request,
        )
        if view is not None:
            await self.finished(job.id, Status.SUCCEEDED, job, view)

    async def failed(self, run: JobRun, error: PixelgateError) -> None:
        """Fail a job whose route ran out (refunded), with the default image where enabled."""
        job = run.job
        tried = [e for e in run.state.route if e.get("attempts")]
        provider = tried[-1]["provider"] if tried else None
        model = tried[-1].get("model") if tried else None
        if run.options.fallback_image and await self._attach_default_image(run):
            provider, model = DEFAULT_IMAGE_PROVIDER, PLACEHOLDER_MODEL
        view = await self.store.finish_failed(
            job.id,
            run.owner,
            code=error.code,
            message=error.message,
            route=run.state.route,
            account_id=job.account_id,
            provider=provider,
            model=model,
            pending=await self.events.take(job.id),
            account_name=job.account_name,
        )
        if view is not None:
            await self.finished(job.id, Status.FAILED, job, view)

    async def fail(self, job: ClaimedJob, owner: str | None, code: str, message: str) -> None:
        """Fail a job before any provider was tried (refunded)."""
        view = await self.store.finish_failed(
            job.id,
            owner,
            code=code,
            message=message,
            route=[],
            account_id=job.account_id,
            pending=await self.events.take(job.id),
            account_name=job.account_name,
        )
        if view is not None:
            await self.finished(job.id, Status.FAILED, job, view)

    async def canceled(self, job: ClaimedJob, owner: str, route: list[dict[str, Any]]) -> None:
        """Finish a running job whose cancellation was requested (refunded)."""
        view = await self.store.finish_canceled(
            job.id,
            owner,
            route=route,
            pending=await self.events.take(job.id),
            account_name=job.account_name,
        )
        if view is not None:
            await self.finished(job.id, Status.CANCELED, job, view)

    async def _attach_default_image(self, run: JobRun) -> bool:
        job = run.job
        image = await self.materializer.default_image(job, run.request)
        if image is None:
            return False
        return await self.store.attach_fallback_image(
            job.id, run.owner, image, account_id=job.account_id
        )

    # Announcing ----------------------------------------------------------------

    async def finished(
        self,
        generation_id: str,
        status: Status | None = None,
        job: ClaimedJob | None = None,
        view: GenerationView | None = None,
    ) -> None:
        """Announce a terminal state: wake waiters, then run the finish hooks in the background.

        ``status``, ``job`` and the final ``view``, when the caller has them, spare the
        waiters and the hooks a read.
        """
        observe.generation_finished(view)
        outcome = self._outcomes.pop(generation_id, None)
        if outcome is not None and not outcome.done():
            if view is not None:
                outcome.set_result(view)
            else:
                outcome.cancel()
        await self.bus.publish(generation_id, final=True)
        if not self.hooks:
            return
        load = (
            partial(_ready, view)
            if view is not None
            else partial(self.store.get_generation, generation_id)
        )
        finished = Finished(
            generation_id,
            load,
            status=status.value if status is not None else None,
            account_id=job.account_id if job is not None else None,
            request=job.request if job is not None else None,
        )
        hooks = [hook for hook in self.hooks if not skips(hook, finished)]
        if not hooks:
            return
        task = asyncio.create_task(self._run_hooks(finished, hooks))
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    async def drain_hooks(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for finish hooks still running, at shutdown."""
        if self._hook_tasks:
            await asyncio.wait(list(self._hook_tasks), timeout=timeout)

    async def _run_hooks(self, finished: Finished, hooks: list[FinishHook]) -> None:
        if len(hooks) == 1:
            await self._run_hook(hooks[0], finished)
        else:
            await asyncio.gather(*(self._run_hook(hook, finished) for hook in hooks))

    async def _run_hook(self, hook: FinishHook, finished: Finished) -> None:
        try:
            await hook(finished)
        except Exception:
            log.exception(
                "finish_hook_failed",
                generation_id=finished.id,
                hook=getattr(hook, "__qualname__", repr(hook)),
            )

    async def announce_followers(self, finished: Finished) -> None:
        """Announce the generations that shared this one's provider call (the store
        finished them in this one's finishing transaction)."""
        if (await finished.request()).get("seed") is None:
            return  # without a seed nothing can have followed it
        view = await finished.view()
        if view.cached_from is not None:
            return
        for follower in await self.store.settled_followers(view.id, view.completed_at):
            await self.finished(follower)

    # Cancelling and waiting ----------------------------------------------------

    async def cancel(self, generation_id: str, account_id: str | None) -> GenerationView:
        """Cancel: a PENDING job ends at once (refunded); a running one is stopped by its worker."""
        view, ended = await self.store.cancel(generation_id, account_id=account_id)
        if ended:
            observe.generation_finished(view)
            # it may have been handed to this process's worker: stop that run too
            await self.bus.request_cancel(generation_id)
            await self.finished(generation_id)
            return view
        await self.bus.request_cancel(generation_id)
        return await self.wait(generation_id, CANCEL_WAIT_S)

    async def wait(self, generation_id: str, timeout: float) -> GenerationView:
        """The generation once terminal, or as it is when ``timeout`` passes.

        A job this process's worker runs is awaited in memory (its finish hands over the
        final view: no read); any other through the bus.
        """
        deadline = time.monotonic() + timeout
        outcome = self._outcomes.get(generation_id)
        if outcome is not None:
            try:
                return await asyncio.wait_for(asyncio.shield(outcome), timeout)
            except TimeoutError:  # still running at the deadline
                return await self.store.get_generation(generation_id)
            except asyncio.CancelledError:
                if not outcome.cancelled():
                    raise  # this waiter was cancelled, not the job's outcome
                # the job ended without a final view here: wait through the bus
        async with self.bus.subscribe(generation_id) as sub:
            look = True
            while True:
                if look:
                    sub.maybe_final = False
                    state = await self.store.status_of(generation_id)
                    if state is not None and state[0] in TERMINAL:
                        break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # progress and other events do not end a wait: read the row only after a
                # final notification, or after a quiet second (a notification may be lost)
                notified = await sub.wait(min(remaining, 1.0))
                look = sub.maybe_final or not notified
        return await self.store.get_generation(generation_id)


async def _ready(view: GenerationView) -> GenerationView:
    return view


class _FollowersHook:
    """Finish hook: :meth:`Finisher.announce_followers`."""

    def __init__(self, finisher: Finisher) -> None:
        self.finisher = finisher

    def skips(self, finished: Finished) -> bool:
        request = finished.known_request
        return request is not None and request.get("seed") is None

    async def __call__(self, finished: Finished) -> None:
        await self.finisher.announce_followers(finished)
