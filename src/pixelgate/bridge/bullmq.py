"""The BullMQ bridge: a BullMQ queue's jobs become pixelgate generations (seed 003's producers).

A Node app keeps calling ``queue.add(...)`` on its ``image-generate`` queue; ``pixelgate
bullmq`` consumes the queue (the Python ``bullmq`` package, a real Redis) and runs each job
through the same pipeline as every other entry point:

- ``{"generationId": "gen_…"}`` follows a generation already admitted through the API;
- ``{"request": {...}}`` (or the request's fields at the top level: ``prompt`` or
  ``template`` + ``inputs``, ``width``/``height``, ``provider``…) admits a new one.

The account is the bridge's (``--account``), or the one behind an ``apiKey`` in the job
data, which the bridge resolves like the HTTP API does; nothing else in the data is trusted.
Progress goes back with ``job.updateProgress``; the finished generation (image URLs,
hashes, cost) is the job's return value; a failed one fails the job with
``"<code>: <message>"``. Delivery is at least once: the BullMQ job id is the admission's
idempotency key, so a redelivered job follows the same generation and is charged once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from pixelgate.api.schemas import generation_body
from pixelgate.core.admission import Caller
from pixelgate.core.event_stream import follow_events
from pixelgate.core.keys import hash_key
from pixelgate.core.models import GenerationRequest, GenerationView
from pixelgate.core.urls import refuse_unsafe_urls
from pixelgate.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    Conflict,
    Forbidden,
    InsufficientCredits,
    NotFound,
    PixelgateError,
    UnsafeURL,
    ValidationFailed,
)

if TYPE_CHECKING:
    from bullmq import Job

    from pixelgate.runtime import Runtime

__all__ = [
    "DEFAULT_QUEUE",
    "BridgeOptions",
    "BullMQBridge",
    "JobFailed",
    "idempotency_key_for",
    "parse_job",
    "result_of",
]

log = structlog.get_logger("pixelgate.bridge.bullmq")

DEFAULT_QUEUE = "image-generate"
DEFAULT_PREFIX = "bull"
#: seed 003's ``WORKER_CONCURRENCY`` default
DEFAULT_CONCURRENCY = 6
DEFAULT_LOCK_S = 30.0
#: a followed generation whose bus notification was lost is looked at again this often
FOLLOW_POLL_S = 1.0
#: job-data keys the bridge reads itself; the rest of a top-level job is the request
BRIDGE_KEYS = frozenset({"apiKey", "generationId"})
MAX_IDEMPOTENCY_KEY = 255
#: errors no retry of the same job can cure: BullMQ must not try again
_FINAL_ERRORS = (
    AuthenticationFailed,
    BudgetExceeded,
    Conflict,
    Forbidden,
    InsufficientCredits,
    NotFound,
    UnsafeURL,
    ValidationFailed,
)


@dataclass(frozen=True)
class BridgeOptions:
    """How the bridge consumes its queue."""

    redis_url: str
    queue: str = DEFAULT_QUEUE
    prefix: str = DEFAULT_PREFIX
    concurrency: int = DEFAULT_CONCURRENCY
    #: BullMQ's lock on a job being processed; a job whose lock lapses (the bridge died)
    #: is redelivered after at most twice this long
    lock_s: float = DEFAULT_LOCK_S


@dataclass(frozen=True)
class ParsedJob:
    """What a job asks for: follow an admitted generation or admit a request."""

    generation_id: str | None
    request: GenerationRequest | None
    api_key: str | None


def parse_job(data: Any) -> ParsedJob:
    """Read a job's data; ``ValidationFailed`` names the field that is wrong."""
    if not isinstance(data, dict):
        raise ValidationFailed("data", "must be an object")
    api_key = data.get("apiKey")
    if api_key is not None and (not isinstance(api_key, str) or not api_key):
        raise ValidationFailed("apiKey", "must be a pixelgate API key")
    generation_id = data.get("generationId")
    if generation_id is not None:
        if not isinstance(generation_id, str) or not generation_id.startswith("gen_"):
            raise ValidationFailed("generationId", "must be a generation id (gen_…)")
        return ParsedJob(generation_id, None, api_key)
    if "request" in data:
        fields, where = data["request"], "request."
        extra = set(data) - BRIDGE_KEYS - {"request"}
        if extra:
            raise ValidationFailed(sorted(extra)[0], "unknown field (the request goes in request)")
    else:
        fields, where = {k: v for k, v in data.items() if k not in BRIDGE_KEYS}, ""
    if not isinstance(fields, dict):
        raise ValidationFailed("request", "must be an object")
    try:
        request = GenerationRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "request"
        raise ValidationFailed(where + field, first["msg"]) from None
    return ParsedJob(None, request, api_key)


def idempotency_key_for(queue: str, job_id: str) -> str:
    """The admission's idempotency key of a BullMQ job: one generation per job id."""
    key = f"bullmq:{queue}:{job_id}"
    if len(key) <= MAX_IDEMPOTENCY_KEY and key.isascii() and key.isprintable() and " " not in key:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
    return f"bullmq:sha256:{digest}"


def result_of(view: GenerationView) -> dict[str, Any]:
    """A finished generation as the job's return value: the native generation body plus
    ``generationId`` and ``imageUrls`` for producers that only want those."""
    body = generation_body(view)
    return {"generationId": view.id, "imageUrls": [i["url"] for i in body["images"]], **body}


class JobFailed(Exception):
    """A job that failed for good: its message is ``"<code>: <message>"``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class BullMQBridge:
    """Consumes one BullMQ queue into the runtime's pipeline."""

    def __init__(self, runtime: Runtime, caller: Caller, options: BridgeOptions) -> None:
        self.runtime = runtime
        self.caller = caller
        self.options = options
        self._worker: Any = None

    async def start(self) -> None:
        """Connect to Redis and start taking jobs."""
        from bullmq import Worker

        lock_ms = max(1000, int(self.options.lock_s * 1000))
        self._worker = Worker(
            self.options.queue,
            self.process,
            {
                "connection": self.options.redis_url,
                "prefix": self.options.prefix,
                "concurrency": self.options.concurrency,
                "lockDuration": lock_ms,
                "stalledInterval": lock_ms,
                # a bridge restarted more than once mid-job must not fail the job for it:
                # the generation behind it is idempotent
                "maxStalledCount": 10,
                "name": "pixelgate",
            },
        )

    async def close(self, grace_s: float) -> None:
        """Stop taking jobs; wait up to ``grace_s`` for those in hand (the rest are
        redelivered to the next bridge and follow the same generations)."""
        if self._worker is None:
            return
        try:
            await asyncio.wait_for(self._worker.close(), grace_s)
        except TimeoutError:
            await self._worker.close(force=True)
        self._worker = None

    async def process(self, job: Job, token: str | None = None) -> dict[str, Any]:
        """The processor BullMQ calls: one job → one generation → its result."""
        from bullmq import UnrecoverableError

        try:
            return await self.run_job(str(job.id), job.data, job.updateProgress)
        except JobFailed as exc:
            log.info("bullmq job failed", job_id=job.id, queue=self.options.queue, error=str(exc))
            raise UnrecoverableError(str(exc)) from None
        except _FINAL_ERRORS as exc:
            log.info("bullmq job refused", job_id=job.id, code=exc.code, error=exc.message)
            raise UnrecoverableError(f"{exc.code}: {exc.message}") from None
        except PixelgateError as exc:
            # rate limits and the like: BullMQ retries if the producer asked for attempts
            raise RuntimeError(f"{exc.code}: {exc.message}") from None

    async def run_job(
        self, job_id: str, data: Any, progress: Callable[[int], Awaitable[Any]]
    ) -> dict[str, Any]:
        """Admit (or find) the job's generation, follow it to its end and return its result.

        Raises:
            JobFailed: the generation failed or was canceled.
            PixelgateError: the job was refused (bad data, no credits, unknown key…).
        """
        parsed = parse_job(data)
        caller = await self._caller(parsed.api_key)
        if parsed.generation_id is not None:
            view = await self.runtime.services.records.get_generation(
                parsed.generation_id, account_id=caller.account_id
            )
        else:
            assert parsed.request is not None
            refuse_unsafe_urls(parsed.request, self.runtime.settings)
            admitted = await self.runtime.pipeline.admit(
                caller,
                parsed.request,
                source="bullmq",
                idempotency_key=idempotency_key_for(self.options.queue, job_id),
            )
            view = admitted.generation
            log.info(
                "bullmq job admitted",
                job_id=job_id,
                generation_id=view.id,
                replayed=not admitted.created,
            )
        view = await self._follow(view, progress)
        if view.status != "SUCCEEDED":
            code = view.error_code or view.status.lower()
            raise JobFailed(code, view.error_message or f"generation {view.status.lower()}")
        return result_of(view)

    async def _caller(self, api_key: str | None) -> Caller:
        if api_key is None:
            account = await self.runtime.services.records.get_account(self.caller.account_id)
            if account.disabled:
                raise Forbidden(f"account {account.name!r} is disabled")
            return self.caller
        info = await self.runtime.services.records.lookup_key(hash_key(api_key))
        if info is None:
            raise AuthenticationFailed("apiKey: invalid API key")
        return Caller(
            account_id=info.account_id,
            account_name=info.account_name,
            is_admin=info.is_admin,
            key_id=info.key_id,
        )

    async def _follow(
        self, view: GenerationView, progress: Callable[[int], Awaitable[Any]]
    ) -> GenerationView:
        """Wait for the generation's end, passing its progress on to the job."""
        reported = -1
        while not view.terminal:
            async for event in follow_events(
                self.runtime.services.records, self.runtime.bus, view.id, poll_s=FOLLOW_POLL_S
            ):
                percent = event.data.get("progress") if event.type == "progress" else None
                if isinstance(percent, int | float) and int(percent) > reported:
                    reported = int(percent)
                    await progress(reported)
            view = await self.runtime.services.records.get_generation(view.id)
        if view.status == "SUCCEEDED" and reported < 100:
            await progress(100)
        return view
