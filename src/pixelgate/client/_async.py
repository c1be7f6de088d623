"""The asyncio client: :class:`AsyncClient`, its :class:`AsyncGenerationHandle` and admin calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx_sse import aconnect_sse

from pixelgate.client._base import (
    DEFAULT_GENERATE_TIMEOUT_S,
    DEFAULT_SERVER_WAIT_S,
    DEFAULT_TIMEOUT_S,
    POLL_MAX_S,
    POLL_START_S,
    SSE_READ_TIMEOUT_S,
    Call,
    RetryPolicy,
    absolute,
    batch_member,
    build_request_body,
    check_digest,
    client_headers,
    new_idempotency_key,
    parse_error,
    parse_event,
    same_origin,
)
from pixelgate.client._calls import Calls
from pixelgate.client._errors import (
    ConnectionFailed,
    DownloadFailed,
    GenerationFailed,
    WaitTimeout,
)
from pixelgate.client._models import (
    Account,
    AccountSummary,
    ApiKey,
    Batch,
    Estimate,
    Event,
    Generation,
    GenerationPage,
    Image,
    ProviderInfo,
)
from pixelgate.core.models import GenerationRequest

__all__ = ["AsyncAdmin", "AsyncClient", "AsyncGenerationHandle"]

T = TypeVar("T")
#: reconnections of an event stream in a row before giving up
MAX_STREAM_RETRIES = 3


class AsyncClient:
    """A pixelgate server over HTTP, for asyncio (``async with AsyncClient(...) as pg``).

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080``.
        api_key: sent as ``Authorization: Bearer <key>``.
        timeout: seconds per HTTP request (``generate`` waits longer on its own).
        max_retries: retries of a 429 or 503 answer, honouring ``Retry-After``.
        max_retry_delay: a longer ``Retry-After`` is not waited for; the error is raised.
        http_client: an ``httpx.AsyncClient`` of your own (its base URL and headers are used as is).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        max_retry_delay: float = 60.0,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._http = http_client or httpx.AsyncClient(
            base_url=base_url, headers=client_headers(api_key, headers), timeout=timeout
        )
        self.retry = RetryPolicy(max_retries=max_retries, max_delay=max_retry_delay)
        self.admin = AsyncAdmin(self)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.send(call.request(self._http))
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"{call.method} {call.path}: {exc!r}") from exc
            if response.is_success:
                return call.parse(response)
            delay = self.retry.delay(response, attempt)
            if delay is None:
                raise parse_error(response)
            await asyncio.sleep(delay)
            attempt += 1

    # generations

    async def submit(
        self,
        prompt: str | None = None,
        *,
        request: GenerationRequest | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> AsyncGenerationHandle:
        """Admit a generation and return at once with a handle to follow it.

        ``fields`` are those of :class:`~pixelgate.core.models.GenerationRequest`
        (``provider``, ``model``, ``width``/``height`` or ``aspect_ratio``, ``n``, ``seed``…).
        """
        body = build_request_body(prompt, request, fields)
        key = idempotency_key or new_idempotency_key()
        generation = await self._send(Calls.create_generation(body, idempotency_key=key))
        return AsyncGenerationHandle(self, generation)

    async def generate(
        self,
        prompt: str | None = None,
        *,
        request: GenerationRequest | None = None,
        timeout: float = DEFAULT_GENERATE_TIMEOUT_S,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Generation:
        """Generate and wait: the SUCCEEDED generation with its images.

        Raises:
            GenerationFailed: it ended FAILED or CANCELED (``code`` says why).
            WaitTimeout: it was not finished within ``timeout`` seconds (it carries on).
        """
        body = build_request_body(prompt, request, fields)
        key = idempotency_key or new_idempotency_key()
        started = time.monotonic()
        wait = min(timeout, DEFAULT_SERVER_WAIT_S)
        generation = await self._send(Calls.create_generation(body, idempotency_key=key, wait=wait))
        if not generation.terminal:
            remaining = timeout - (time.monotonic() - started)
            generation = await self.wait(generation.id, timeout=max(0.0, remaining))
        if not generation.ok:
            raise GenerationFailed(generation)
        return generation

    async def get_generation(self, generation: str | Generation) -> Generation:
        return await self._send(Calls.get_generation(generation))

    async def list_generations(
        self,
        *,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        batch_id: str | None = None,
    ) -> GenerationPage:
        """The caller's generations, newest first (admins: every account's)."""
        return await self._send(Calls.list_generations(status, limit, cursor, batch_id))

    async def iter_generations(
        self, *, status: str | None = None, batch_id: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Generation]:
        """Every generation (of ``status``, or of a batch), newest first, page after page."""
        cursor = None
        while True:
            page = await self.list_generations(
                status=status, limit=page_size, cursor=cursor, batch_id=batch_id
            )
            for generation in page.data:
                yield generation
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    async def cancel(self, generation: str | Generation) -> Generation:
        """Cancel; a running job stops at its provider shortly after (``cancel_requested``)."""
        return await self._send(Calls.cancel_generation(generation))

    async def wait(
        self, generation: str | Generation, *, timeout: float = DEFAULT_GENERATE_TIMEOUT_S
    ) -> Generation:
        """The generation once SUCCEEDED, FAILED or CANCELED (no exception for those two).

        Raises:
            WaitTimeout: still running after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        interval = POLL_START_S
        while True:
            current = await self.get_generation(generation)
            if current.terminal:
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(current, timeout)
            await asyncio.sleep(min(interval, left))
            interval = min(POLL_MAX_S, interval * 2)

    async def events(
        self, generation: str | Generation, *, last_event_id: int | None = None
    ) -> AsyncIterator[Event]:
        """The generation's events as they happen (server-sent events), up to its final one.

        A dropped connection is resumed from the last event received (``Last-Event-ID``).
        """
        gen_id = generation if isinstance(generation, str) else generation.id
        after = last_event_id
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if after is not None:
                headers["Last-Event-ID"] = str(after)
            timeout = httpx.Timeout(self._http.timeout.connect, read=SSE_READ_TIMEOUT_S)
            try:
                async with aconnect_sse(
                    self._http, "GET", f"/v1/generations/{gen_id}/events",
                    headers=headers, timeout=timeout,
                ) as source:
                    if not source.response.is_success:
                        await source.response.aread()
                        raise parse_error(source.response)
                    async for sse in source.aiter_sse():
                        event = parse_event(sse.id, sse.event, sse.data, gen_id)
                        failures = 0
                        after = event.id if event.id is not None else after
                        yield event
                        if event.terminal:
                            return
                return  # the stream ended: the generation is over
            except httpx.TransportError as exc:
                failures += 1
                if failures > MAX_STREAM_RETRIES:
                    raise ConnectionFailed(f"event stream of {gen_id}: {exc!r}") from exc
                await asyncio.sleep(POLL_START_S * 2**failures)

    # images

    async def download(self, image: Image | str, path: str | Path | None = None) -> bytes:
        """An image's bytes (checked against its ``sha256``); also written to ``path`` if given.

        The API key is only sent to the pixelgate server itself, never to a CDN or bucket.
        """
        url = image.url if isinstance(image, Image) else image
        request = self._http.build_request("GET", absolute(url, self._http.base_url))
        if not same_origin(url, self._http.base_url):
            request.headers.pop("Authorization", None)
        try:
            response = await self._http.send(request, follow_redirects=True)
        except httpx.TransportError as exc:
            raise DownloadFailed(f"{url}: {exc!r}") from exc
        if not response.is_success:
            raise DownloadFailed(f"{url}: HTTP {response.status_code}") from parse_error(response)
        data = response.content
        check_digest(image, data)
        if path is not None:
            await asyncio.to_thread(Path(path).write_bytes, data)
        return data

    # catalog, money

    async def providers(self) -> list[ProviderInfo]:
        """The catalog: providers, their models, capabilities, prices and health."""
        return await self._send(Calls.providers())

    async def estimate(
        self, prompt: str | None = None, *, request: GenerationRequest | None = None, **fields: Any
    ) -> Estimate:
        """Credits and USD a request would cost, without running it."""
        return await self._send(Calls.estimate(build_request_body(prompt, request, fields)))

    async def account(self) -> Account:
        """The caller's balance, tier, limits left and budget."""
        return await self._send(Calls.account())

    async def usage(self, days: int = 30) -> dict[str, Any]:
        return await self._send(Calls.usage(days))

    # batches

    async def create_batch(
        self,
        requests: Sequence[GenerationRequest | Mapping[str, Any]],
        *,
        concurrency: int | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """Admit many generations at once (all or none)."""
        bodies = [batch_member(r) for r in requests]
        call = Calls.create_batch(
            bodies, concurrency=concurrency, metadata=metadata,
            idempotency_key=idempotency_key or new_idempotency_key(),
        )
        return await self._send(call)

    async def get_batch(self, batch: str | Batch) -> Batch:
        return await self._send(Calls.get_batch(batch))

    async def list_batches(self, *, limit: int = 20, cursor: str | None = None) -> list[Batch]:
        return await self._send(Calls.list_batches(limit, cursor))

    async def cancel_batch(self, batch: str | Batch) -> Batch:
        return await self._send(Calls.cancel_batch(batch))

    async def wait_batch(
        self, batch: str | Batch, *, timeout: float = DEFAULT_GENERATE_TIMEOUT_S
    ) -> Batch:
        """The batch once every member finished (or it was canceled)."""
        deadline = time.monotonic() + timeout
        interval = POLL_START_S
        while True:
            current = await self.get_batch(batch)
            if current.terminal:
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(current, timeout)
            await asyncio.sleep(min(interval, left))
            interval = min(POLL_MAX_S, interval * 2)


class AsyncGenerationHandle:
    """A submitted generation: ``status()``, ``events()``, ``wait()``, ``cancel()``."""

    def __init__(self, client: AsyncClient, generation: Generation) -> None:
        self._client = client
        #: the generation as last seen
        self.generation = generation

    @property
    def id(self) -> str:
        return self.generation.id

    async def status(self) -> Generation:
        """The generation now (also kept in ``.generation``)."""
        self.generation = await self._client.get_generation(self.id)
        return self.generation

    def events(self, *, last_event_id: int | None = None) -> AsyncIterator[Event]:
        return self._client.events(self.id, last_event_id=last_event_id)

    async def wait(self, timeout: float = DEFAULT_GENERATE_TIMEOUT_S) -> Generation:
        """The finished generation (SUCCEEDED, FAILED or CANCELED)."""
        self.generation = await self._client.wait(self.id, timeout=timeout)
        return self.generation

    async def cancel(self) -> Generation:
        self.generation = await self._client.cancel(self.id)
        return self.generation

    def __repr__(self) -> str:
        return f"<GenerationHandle {self.id} {self.generation.status}>"


class AsyncAdmin:
    """Admin calls (an admin key): accounts, credits and keys."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create_account(
        self, name: str, *, tier: str = "FREE", credits: int | None = None, **fields: Any
    ) -> Account:
        return await self._client._send(Calls.create_account(name, tier, credits, fields))

    async def list_accounts(self) -> list[AccountSummary]:
        return await self._client._send(Calls.list_accounts())

    async def get_account(self, name: str) -> Account:
        return await self._client._send(Calls.get_account(name))

    async def update_account(self, name: str, **fields: Any) -> Account:
        """Change ``tier``, ``daily_budget_usd``, ``preferred_providers``, ``disabled``…"""
        return await self._client._send(Calls.update_account(name, fields))

    async def grant_credits(self, name: str, credits: int, *, reason: str) -> int:
        """Add (or, negative, remove) credits; returns the new balance."""
        return await self._client._send(Calls.grant_credits(name, credits, reason))

    async def create_key(
        self, account: str, *, admin: bool = False, name: str | None = None
    ) -> ApiKey:
        """A new API key; ``.key`` holds the secret, shown this once."""
        return await self._client._send(Calls.create_key(account, admin, name))

    async def list_keys(self) -> list[dict[str, Any]]:
        return await self._client._send(Calls.list_keys())

    async def revoke_key(self, key_id: str) -> None:
        await self._client._send(Calls.revoke_key(key_id))

