"""Shared HTTP helpers for adapters: error mapping, Retry-After, capped downloads, polling,
and a reader of server-sent events."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    Transient,
)
from pixelgate.providers._pool import PLAIN_ARGUMENTS, PooledClient

ErrorMapper = Callable[[httpx.Response], ProviderError]

__all__ = [
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "ServerSentEvent",
    "call",
    "download",
    "error_body",
    "error_for_status",
    "parse",
    "parse_retry_after",
    "poll_until",
    "request",
    "request_within",
    "server_sent_events",
]

DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
_MAX_MESSAGE = 500
M = TypeVar("M")
BM = TypeVar("BM", bound=BaseModel)


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _message(response: httpx.Response) -> str:
    """Best-effort human message from an error body (never echoes request headers)."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:_MAX_MESSAGE] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)[:_MAX_MESSAGE]
        for key in ("error", "detail", "message", "name"):
            if body.get(key):
                return str(body[key])[:_MAX_MESSAGE]
    return str(body)[:_MAX_MESSAGE]


def error_for_status(provider: str, response: httpx.Response) -> ProviderError:
    """Map a non-2xx response onto the taxonomy (adapters refine refusals first)."""
    status = response.status_code
    message = f"{provider}: HTTP {status}: {_message(response)}"
    kwargs: dict[str, Any] = {"provider": provider, "status_code": status}
    if status == 429:
        return ProviderRateLimited(
            message, retry_after=parse_retry_after(response.headers), **kwargs
        )
    if status in (401, 403):
        return ProviderAuthError(message, **kwargs)
    if status in (408, 504):
        return ProviderTimeout(message, **kwargs)
    if status >= 500 or status == 409:
        return Transient(message, retry_after=parse_retry_after(response.headers), **kwargs)
    return InvalidRequest(message, **kwargs)


async def request(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    timeout: float | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request; transport failures become ``Transient``/``ProviderTimeout``.

    The response is returned whatever its status: the adapter inspects it.
    """
    try:
        if isinstance(client, PooledClient) and kwargs.keys() <= PLAIN_ARGUMENTS:
            return await client.plain_request(method, url, timeout=timeout, **kwargs)
        return await client.request(method, url, timeout=timeout, **kwargs)
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(f"{provider}: request timed out", provider=provider) from exc
    except httpx.HTTPError as exc:
        raise Transient(f"{provider}: {type(exc).__name__}", provider=provider) from exc


async def request_within(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    deadline_s: float,
    **kwargs: Any,
) -> httpx.Response:
    """:func:`request` under a total deadline (httpx's timeouts are per read, not per
    request); past it, ``ProviderTimeout``."""
    try:
        async with asyncio.timeout(deadline_s):
            # the deadline bounds every phase, so no per-read timer besides it (aiohttp
            # moves that timer at every chunk it receives)
            return await request(client, provider, method, url, timeout=None, **kwargs)
    except TimeoutError:
        raise ProviderTimeout(
            f"{provider}: no answer within {deadline_s:g} s", provider=provider
        ) from None


def error_body(shape: type[BM], response: httpx.Response) -> BM:
    """An error response's body as ``shape``, or an empty ``shape()`` if it is not one."""
    try:
        return shape.model_validate_json(response.content)
    except ValidationError:
        return shape()


async def call(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    error: ErrorMapper | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """:func:`request`, raising ``error(response)`` (default :func:`error_for_status`)
    for a status of 400 or more."""
    response = await request(client, provider, method, url, **kwargs)
    if response.status_code >= 400:
        raise error(response) if error else error_for_status(provider, response)
    return response


@overload
def parse(provider: str, shape: type[BM], response: httpx.Response) -> BM: ...
@overload
def parse(provider: str, shape: TypeAdapter[M], response: httpx.Response) -> M: ...
def parse(
    provider: str, shape: type[BaseModel] | TypeAdapter[Any], response: httpx.Response
) -> Any:
    """The response body as ``shape``; a body of another shape is ``Transient``."""
    try:
        if isinstance(shape, TypeAdapter):
            return shape.validate_json(response.content)
        return shape.model_validate_json(response.content)
    except ValidationError:
        raise Transient(
            f"{provider}: malformed response body",
            provider=provider,
            status_code=response.status_code,
        ) from None


async def download(
    client: httpx.AsyncClient,
    provider: str,
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[bytes, str | None]:
    """Stream ``url`` with a byte cap; returns the body and its content type."""
    try:
        async with client.stream("GET", url, timeout=timeout, headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_for_status(provider, response)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise InvalidRequest(f"{provider}: image larger than {max_bytes} bytes")
            chunks: list[bytes] = []
            total = 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise InvalidRequest(f"{provider}: image larger than {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks), response.headers.get("content-type")
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(f"{provider}: download timed out", provider=provider) from exc
    except httpx.HTTPError as exc:
        raise Transient(f"{provider}: download failed: {type(exc).__name__}") from exc


async def poll_until(
    check: Callable[[], Awaitable[M | None]],
    *,
    provider: str,
    interval: float,
    timeout: float,
) -> M:
    """Call ``check`` every ``interval`` seconds until it returns a value or ``timeout`` passes.

    A plain loop for a poll that needs none of :mod:`pixelgate.providers._jobs` (no job id
    to save, nothing to resume); submit-then-poll jobs use ``run_polling_job``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProviderTimeout(f"{provider}: no result within {timeout:g} s", provider=provider)
        await asyncio.sleep(min(interval, remaining))


@dataclass(frozen=True)
class ServerSentEvent:
    """One event of a ``text/event-stream`` body: its ``event:`` name and joined ``data:``."""

    event: str | None
    data: str


async def server_sent_events(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """Events from the lines of a ``text/event-stream`` body (``response.aiter_lines()``).

    The WHATWG rules adapters need: ``data:`` lines join with a newline, a blank line ends
    an event, comments (``:``) and unknown fields are skipped, an event without data is
    not dispatched. A last event the server closed without its blank line still counts.
    """
    name: str | None = None
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield ServerSentEvent(name, "\n".join(data))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value or None
        elif field == "data":
            data.append(value)
    if data:
        yield ServerSentEvent(name, "\n".join(data))
