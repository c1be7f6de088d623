"""The process's one pooled client for provider calls: httpx's API over aiohttp's pool.

httpcore's pool checks the socket of every pooled connection on each request, so its CPU
per request grows with the connections a burst opened. Measured on the OpenAI route at
16 connections, aiohttp's pool (through ``httpx-aiohttp``) took the gateway's CPU per
request from 5.9 to 3.8 ms (docs/benchmarks.md). Redirects, timeouts and decoding stay
httpx's.

``httpx-aiohttp`` reports every ``aiohttp.ClientConnectionError`` (a refused connection,
a server that hung up) as ``httpx.ConnectTimeout``; adapters must tell a timeout from a
provider that is down, so :class:`PooledTransport` gives those back their real kind, in
the request and while the body is read, and turns any other aiohttp error into an
``httpx.TransportError``. The aiohttp transport is made on the first request: importing
aiohttp and building its SSL context cost ~0.13 s of a start that may never call a
provider (the offline placeholder needs no HTTP).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from httpx_aiohttp import AiohttpTransport

__all__ = ["PooledTransport", "pooled_client"]


def pooled_client(*, max_connections: int, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose connections are aiohttp's, at most ``max_connections``."""
    transport = PooledTransport(limits=httpx.Limits(max_connections=max_connections))
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True)


def _real_kind(exc: Exception) -> Exception:
    """``exc`` as the httpx error of its real kind (see the module doc)."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientError):  # one httpx-aiohttp does not translate
        return httpx.ReadError(f"{type(exc).__name__}: {exc}")
    cause = exc.__cause__
    if not isinstance(exc, httpx.TimeoutException) or not isinstance(
        cause, aiohttp.ClientConnectionError
    ):
        return exc
    if isinstance(cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return exc  # a real timeout
    refused = isinstance(cause, aiohttp.ClientConnectorError)
    kind = httpx.ConnectError if refused else httpx.ReadError
    return kind(str(cause) or type(cause).__name__)


def _translatable(exc: Exception) -> bool:
    import aiohttp

    return isinstance(exc, httpx.TransportError | aiohttp.ClientError)


class _Body(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            if not _translatable(exc):
                raise
            raise _real_kind(exc) from exc.__cause__ or exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class PooledTransport(httpx.AsyncBaseTransport):
    """``httpx-aiohttp``'s transport, made on first use, with transport errors of their
    real kind."""

    def __init__(self, *, limits: httpx.Limits) -> None:
        self._limits = limits
        self._inner: AiohttpTransport | None = None

    def _transport(self) -> AiohttpTransport:
        if self._inner is None:
            from httpx_aiohttp import AiohttpTransport

            self._inner = AiohttpTransport(limits=self._limits)
        return self._inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._transport().handle_async_request(request)
        except Exception as exc:
            if not _translatable(exc):
                raise
            raise _real_kind(exc) from exc.__cause__ or exc
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream)
        return response

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
