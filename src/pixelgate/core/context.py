"""A running job: what it is doing, the events it reports, the context providers get.

:class:`JobEvents` is the one way a running job reports events (``provider_selected``,
``progress``, ``retrying``…); they are group-committed by the :class:`EventBuffer`, and the
finishing transaction takes those still waiting. :class:`AttemptContext` is the
:class:`~pixelgate.providers.base.JobContext` one provider call is handed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pixelgate.config import OutboundLimit, RoutingSettings, Settings
from pixelgate.core.event_writer import EventBuffer
from pixelgate.core.models import GenerationRequest
from pixelgate.core.partials import PARTIAL_IMAGE, store_partial
from pixelgate.core.ports import JobWrites
from pixelgate.core.progress import JobProgress, Tracker
from pixelgate.core.records import ClaimedJob, RunningEvent
from pixelgate.core.routing import Candidate, Deadline, RouteOptions
from pixelgate.providers.base import HttpClient, ProviderResult
from pixelgate.storage.base import Storage

__all__ = ["AttemptContext", "JobEvents", "JobRun", "RunState"]

#: at most one stored progress event per job this often (each is a write)
PROGRESS_MIN_INTERVAL_S = 1.0


@dataclass
class RunState:
    """What a running job is doing right now (for cancellation at the provider)."""

    provider: str | None = None
    provider_job_id: str | None = None
    route: list[dict[str, Any]] = field(default_factory=list)
    #: provider → its job id, for every provider call in flight (racing runs several)
    jobs: dict[str, str] = field(default_factory=dict)
    #: the progress shown last, where a simulated curve continues from
    progress: JobProgress = field(default_factory=JobProgress)
    #: partial images received so far (numbers their storage keys)
    partials: int = 0


@dataclass
class JobRun:
    """One execution of a job: its request, routing options, candidates and deadline."""

    job: ClaimedJob
    owner: str
    request: GenerationRequest
    state: RunState
    options: RouteOptions
    routing: RoutingSettings
    account_limits: dict[str, OutboundLimit]
    candidates: list[Candidate]
    deadline: Deadline
    plan: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    announced: bool = False
    retries: int = 0
    results: dict[str, tuple[ProviderResult, int]] = field(default_factory=dict)


class JobEvents:
    """The events of running jobs, group-committed by ``buffer``."""

    def __init__(self, buffer: EventBuffer) -> None:
        self.buffer = buffer

    async def event(
        self, generation_id: str, type_: str, data: dict[str, Any] | None = None, **values: Any
    ) -> None:
        """An event of a running job (and the generation columns it sets), group-committed."""
        await self.buffer.add(RunningEvent(generation_id, type_, data or {}, values))

    async def add(self, events: list[RunningEvent]) -> None:
        """Events of running jobs; none lands after its job ended."""
        for event in events:
            await self.buffer.add(event)

    async def simulated(self, values: list[tuple[str, int]]) -> None:
        """Simulated progress of attempts whose provider reports none (the ticker's emit)."""
        events = [
            RunningEvent(id_, "progress", {"progress": pct, "simulated": True}, {"progress": pct})
            for id_, pct in values
        ]
        await self.add(events)

    async def take(self, generation_id: str) -> list[RunningEvent]:
        """The job's events still waiting: its finishing transaction writes them."""
        return await self.buffer.take(generation_id)


class AttemptContext:
    """The :class:`~pixelgate.providers.base.JobContext` handed to adapters."""

    def __init__(
        self,
        job: ClaimedJob,
        provider: str,
        state: RunState,
        *,
        http: HttpClient,
        settings: Settings,
        store: JobWrites,
        storage: Storage,
        events: JobEvents,
    ) -> None:
        self._job = job
        self._provider = provider
        self._state = state
        self._http = http
        self._settings = settings
        self._store = store
        self._storage = storage
        self._events = events
        self._last_progress = 0.0
        resumable = job.provider_job_provider == provider
        self._provider_job_id = job.provider_job_id if resumable else None
        #: this attempt's simulated progress, stopped by the first real report
        self.simulated: Tracker | None = None

    @property
    def http(self) -> HttpClient:
        return self._http

    @property
    def provider_job_id(self) -> str | None:
        return self._provider_job_id

    async def save_provider_job(self, job_id: str) -> None:
        self._provider_job_id = job_id
        self._state.provider_job_id = job_id
        self._state.jobs[self._provider] = job_id
        await self._store.save_provider_job(self._job.id, self._provider, job_id)
        await self._events.event(
            self._job.id, "provider_job", {"provider": self._provider, "job_id": job_id}
        )

    async def progress(self, percent: int, message: str | None = None) -> None:
        if self.simulated is not None:
            self.simulated.stop()
        percent = max(0, min(99, int(percent)))
        self._state.progress.reported(percent)
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_MIN_INTERVAL_S and percent < 100:
            return
        self._last_progress = now
        data: dict[str, Any] = {"progress": percent}
        if message:
            data["message"] = message
        await self._events.add(
            [RunningEvent(self._job.id, "progress", data, {"progress": percent})]
        )

    async def partial_image(self, index: int, data: bytes, output_format: str) -> None:
        self._state.partials += 1
        event = await store_partial(
            self._storage,
            self._job,
            prefix=self._settings.storage_prefix,
            max_bytes=self._settings.max_image_bytes,
            provider=self._provider,
            sequence=self._state.partials,
            index=index,
            data=data,
            declared=output_format,
        )
        if event is not None:
            await self._events.add([RunningEvent(self._job.id, PARTIAL_IMAGE, event)])
