"""The worker loop: claim → pipeline.execute → done, with leases renewed in one query.

Crash safety comes from the rows: a job is claimed by compare-and-set with a
lease; if the process dies the lease expires (or, on the same host, the dead
owner is detected at start-up) and the job runs again. Re-runs are harmless:
storage keys are stable and finishing is a compare-and-set on the lease owner.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from contextlib import suppress
from functools import partial

import structlog

from pixelgate.core.bus import EventBus
from pixelgate.core.pipeline import Pipeline
from pixelgate.db.store import ClaimedJob, Store
from pixelgate.observability import tracing

__all__ = ["Worker"]

log = structlog.get_logger("pixelgate.worker")
CLAIM_BATCH = 32


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Worker:
    """Runs up to ``concurrency`` jobs at once as asyncio tasks in this process."""

    def __init__(
        self,
        *,
        store: Store,
        pipeline: Pipeline,
        bus: EventBus,
        concurrency: int,
        lease_s: float,
        poll_s: float,
        max_deliveries: int,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.bus = bus
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.max_deliveries = max_deliveries
        self.owner = _owner_id()
        self._jobs: dict[str, tuple[ClaimedJob, asyncio.Task[None]]] = {}
        #: slots held by admissions about to hand a job over (``reserve``)
        self._reserved = 0
        #: set whenever a job ends here (a slot is free again)
        self._slot_freed = asyncio.Event()
        self._canceling: set[str] = set()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    def reserve(self) -> bool:
        """Hold a slot for a job admission is about to hand over (``core.handoff.LocalWorker``)."""
        if self._stopping.is_set() or len(self._jobs) + self._reserved >= self.concurrency:
            return False
        self._reserved += 1
        return True

    def unreserve(self) -> None:
        self._reserved -= 1

    def accept(self, job: ClaimedJob) -> None:
        """Run a job admitted already leased to this worker, in its reserved slot."""
        self._reserved -= 1
        self._spawn(job)

    async def start(self) -> None:
        await self._recover_dead_local_owners()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="pixelgate-claim"),
            asyncio.create_task(self._lease_loop(), name="pixelgate-lease"),
        ]
        log.info("worker_started", owner=self.owner, concurrency=self.concurrency)

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, let in-flight jobs finish within ``grace_s``, release the rest."""
        self._stopping.set()
        await self.bus.notify_jobs()
        running = [task for _, task in self._jobs.values()]
        if running:
            log.info("worker_draining", jobs=len(running), grace_s=grace_s)
            await asyncio.wait(running, timeout=grace_s)
        leftover = list(self._jobs.values())
        for _, task in leftover:
            task.cancel()
        for job, task in leftover:
            with suppress(asyncio.CancelledError, Exception):
                await task
            await self.store.release(job.id, self.owner)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        log.info("worker_stopped", released=len(leftover))

    async def _recover_dead_local_owners(self) -> None:
        host = socket.gethostname()
        dead = []
        for owner in await self.store.lease_owners():
            owner_host, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                dead.append(owner)
        requeued = await self.store.reap(dead_owners=dead)
        if requeued:
            log.info("jobs_recovered", count=len(requeued))

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            free = self.concurrency - len(self._jobs) - self._reserved
            claimed: list[ClaimedJob] = []
            if free > 0:
                try:
                    claimed = await self.store.claim(
                        self.owner, self.lease_s, min(free, CLAIM_BATCH)
                    )
                except Exception:
                    log.exception("claim_failed")
                for job in claimed:
                    self._spawn(job)
            if not claimed or len(claimed) < min(free, CLAIM_BATCH):
                await self.bus.wait_for_jobs(self.poll_s)

    async def _wait_for_room(self, timeout: float = 1.0) -> None:
        """Until a running job ends here (or ``timeout``: stopping is checked then)."""
        self._slot_freed.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._slot_freed.wait(), timeout)

    def _spawn(self, job: ClaimedJob) -> None:
        task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._jobs[job.id] = (job, task)
        self.bus.on_cancel(job.id, partial(self._cancel, job.id, task))

    async def _run(self, job: ClaimedJob) -> None:
        try:
            if job.deliveries > self.max_deliveries:
                await self.pipeline.fail(
                    job,
                    self.owner,
                    "worker_lost",
                    f"the job was interrupted {job.deliveries - 1} times; giving up",
                )
                return
            with tracing.job_span(job.id, job.request):
                await self.pipeline.execute(job, self.owner)
        except asyncio.CancelledError:
            if job.id in self._canceling:
                await asyncio.shield(self.pipeline.cancel_running(job, self.owner))
                return
            raise
        except Exception as exc:
            log.exception("job_crashed", generation_id=job.id)
            await self.pipeline.fail(
                job, self.owner, "internal_error", f"internal error: {type(exc).__name__}"
            )
        finally:
            self._slot_freed.set()
            was_full = len(self._jobs) + self._reserved >= self.concurrency
            self._jobs.pop(job.id, None)
            self._canceling.discard(job.id)
            self.bus.forget_cancel(job.id)
            if was_full:  # the claim loop stopped claiming: a slot is free again
                await self.bus.notify_jobs()

    def _cancel(self, gen_id: str, task: asyncio.Task[None]) -> None:
        if not task.done() and gen_id not in self._canceling:
            self._canceling.add(gen_id)
            task.cancel()

    async def _lease_loop(self) -> None:
        interval = max(0.05, self.lease_s / 3)
        reap_every = max(1, round(self.lease_s / 2 / interval))
        tick = 0
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            tick += 1
            try:
                await self._renew_all()
                if tick % reap_every == 0:
                    requeued = await self.store.reap()
                    if requeued:
                        log.info("leases_expired", count=len(requeued))
                        await self.bus.notify_jobs()
            except Exception:
                log.exception("lease_loop_failed")

    async def _renew_all(self) -> None:
        if not self._jobs:
            return
        owned = await self.store.renew_all(self.owner, self.lease_s)
        for gen_id, (_, task) in list(self._jobs.items()):
            if gen_id not in owned:
                if not task.done() and not await self._finished_here(gen_id):
                    log.warning("lease_lost", generation_id=gen_id)
                    task.cancel()
            elif owned[gen_id]:
                self._cancel(gen_id, task)

    async def _finished_here(self, gen_id: str) -> bool:
        # A job that has just written its terminal state no longer holds a lease but its
        # task is still announcing the result (bus, finish hooks): not a lost lease.
        state = await self.store.status_of(gen_id)
        return state is not None and state[0] in ("SUCCEEDED", "FAILED", "CANCELED")
