"""The :class:`~pixelgate.core.bus.EventBus` of the scale-out deployment: Redis pub/sub.

Any process publishes; every process that has a subscriber for a generation hears it,
so an SSE stream on one API process follows a job run by a worker in another, and a
synchronous request returns as soon as any worker finishes its job. Cancel requests and
job wake-ups are broadcast on one channel each.

Notifications are hints, never the truth (the database is): when Redis is down a
publish is dropped and logged, waiters fall back to polling the database, and after a
reconnect every local subscriber is woken once to look again, so nothing is missed for
longer than one poll interval. Notifications go out pipelined with the others of the
moment; a running job's (several per job, announced one by one as its events are
written) do not wait for their round trip, a final one does.

The bus uses the process's Redis client when given one (``Runtime`` shares it with the
breakers, gates and rate windows, and closes it); made from a URL it owns its client.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import structlog

from pixelgate.core.bus import Subscription
from pixelgate.resilience.counters import CONNECT_TIMEOUT_S, open_redis

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBus"]

log = structlog.get_logger("pixelgate.bus")

READ_TIMEOUT_S = 1.0
#: the payloads of a generation's channel: an event was written / it reached a terminal state
EVENT = "1"
FINAL = "final"
RECONNECT_MAX_S = 2.0
WARN_EVERY_S = 10.0
#: notifications per pipeline round trip
PUBLISH_BATCH = 500


class RedisBus:
    """Redis pub/sub fan-out, one subscriber connection per process."""

    def __init__(
        self, url: str | None = None, *, prefix: str = "pixelgate", redis: Redis | None = None
    ) -> None:
        if redis is None and url is None:
            raise ValueError("RedisBus needs a URL or a client")
        self.prefix = prefix
        self._owns_client = redis is None
        self.redis: Redis = redis if redis is not None else open_redis(str(url))
        self._jobs_channel = f"{prefix}:jobs"
        self._cancel_channel = f"{prefix}:cancel"
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._jobs = asyncio.Event()
        self._cancels: dict[str, Callable[[], None]] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._down = False
        self._last_warning = 0.0
        # notifications waiting for the next pipelined round trip (see _send)
        self._outbox: list[tuple[str, str, asyncio.Future[None] | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._jobs_publishing = False
        self._jobs_dirty = False
        self.connected = asyncio.Event()

    def _channel(self, generation_id: str) -> str:
        return f"{self.prefix}:gen:{generation_id}"

    async def start(self, wait_s: float = CONNECT_TIMEOUT_S) -> None:
        """Start the subscriber; waits (bounded) for the first connection."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_forever(), name="pixelgate-redis-bus")
        with suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait_s)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # EventBus ------------------------------------------------------------------

    async def publish(self, generation_id: str, *, final: bool = False) -> None:
        """Notify every process; a final one returns after its round trip, the others
        (a running job's events: several per job) are only queued for the next one."""
        for sub in self._subs.get(generation_id, ()):
            sub.notify(final=final)  # local subscribers need no round trip (nor the echo)
        if final:
            await self._send(self._channel(generation_id), FINAL)
        else:
            self._queue(self._channel(generation_id), EVENT)

    @asynccontextmanager
    async def subscribe(self, generation_id: str) -> AsyncIterator[Subscription]:
        sub = Subscription()
        subs = self._subs[generation_id]
        first = not subs
        subs.add(sub)
        if first and self._pubsub is not None and self.connected.is_set():
            try:
                await self._pubsub.subscribe(self._channel(generation_id))
            except Exception as exc:  # the reconnect re-subscribes every channel
                self._warn("redis_subscribe_failed", exc)
        try:
            yield sub
        finally:
            current = self._subs.get(generation_id)
            if current is not None:
                current.discard(sub)
                if not current:
                    del self._subs[generation_id]
                    if self._pubsub is not None and self.connected.is_set():
                        with suppress(Exception):
                            await self._pubsub.unsubscribe(self._channel(generation_id))

    async def notify_jobs(self) -> None:
        self._jobs.set()
        # Coalesce: a burst of admissions costs one publish in flight plus one after it.
        if self._jobs_publishing:
            self._jobs_dirty = True
            return
        self._jobs_publishing = True
        try:
            while True:
                self._jobs_dirty = False
                await self._send(self._jobs_channel, "1")
                if not self._jobs_dirty:
                    break
        finally:
            self._jobs_publishing = False

    async def wait_for_jobs(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._jobs.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._jobs.clear()

    async def request_cancel(self, generation_id: str) -> None:
        callback = self._cancels.pop(generation_id, None)
        if callback is not None:
            callback()
        await self._send(self._cancel_channel, generation_id)

    def on_cancel(self, generation_id: str, callback: Callable[[], None]) -> None:
        self._cancels[generation_id] = callback

    def forget_cancel(self, generation_id: str) -> None:
        self._cancels.pop(generation_id, None)

    async def close(self) -> None:
        self._closed = True
        if self._flusher is not None:  # queued notifications go out first
            with suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._flusher), CONNECT_TIMEOUT_S)
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        self._subs.clear()
        if self._owns_client:
            with suppress(Exception):
                await self.redis.aclose(close_connection_pool=True)

    # Internals -----------------------------------------------------------------

    async def _send(self, channel: str, message: str) -> None:
        """Publish, pipelined with every other notification sent meanwhile: thousands of
        jobs finishing at once cost a few round trips (and connections), not one each.
        Returns once the round trip carrying it is done; failures are logged, not raised."""
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(channel, message, sent)
        await sent

    def _queue(self, channel: str, message: str, sent: asyncio.Future[None] | None = None) -> None:
        """Put a notification in the next pipelined round trip (``sent`` ends with it)."""
        self._outbox.append((channel, message, sent))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_outbox())

    async def _flush_outbox(self) -> None:
        try:
            while self._outbox:
                batch = self._outbox[:PUBLISH_BATCH]
                del self._outbox[:PUBLISH_BATCH]
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for channel, message, _ in batch:
                            pipe.publish(channel, message)
                        await pipe.execute()
                except Exception as exc:
                    self._warn("redis_publish_failed", exc)
                for _, _, sent in batch:
                    if sent is not None and not sent.done():
                        sent.set_result(None)
        finally:
            self._flusher = None

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(what, error=type(exc).__name__, detail=str(exc)[:200])

    async def _read_forever(self) -> None:
        delay = 0.1
        while not self._closed:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                channels = [self._jobs_channel, self._cancel_channel]
                channels += [self._channel(g) for g in list(self._subs)]
                await pubsub.subscribe(*channels)
                self._pubsub = pubsub
                self.connected.set()
                delay = 0.1
                if self._down:
                    self._down = False
                    log.info("redis_bus_reconnected", channels=len(channels))
                self._wake_everyone()  # anything published while we were away: look again
                while not self._closed:
                    message = await pubsub.get_message(timeout=READ_TIMEOUT_S)
                    if message is not None:
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                self._pubsub = None
                if not self._down:
                    self._down = True
                    log.warning("redis_bus_disconnected", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
            finally:
                self._pubsub = None
                with suppress(Exception):
                    await pubsub.aclose()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = _text(message["channel"])
        if channel == self._jobs_channel:
            self._jobs.set()
        elif channel == self._cancel_channel:
            callback = self._cancels.pop(_text(message["data"]), None)
            if callback is not None:
                callback()
        else:
            gen_id = channel.rpartition(":")[2]
            final = _text(message["data"]) != EVENT
            for sub in self._subs.get(gen_id, ()):
                sub.notify(final=final)

    def _wake_everyone(self) -> None:
        self._jobs.set()
        for subs in self._subs.values():
            for sub in subs:
                sub.notify()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
