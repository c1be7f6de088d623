"""The process's one pooled client for provider calls: httpx's API over aiohttp's pool.

httpcore's pool checks the socket of every pooled connection on each request, so its CPU
per request grows with the connections a burst opened. Measured on the OpenAI route at
16 connections, aiohttp's pool (through ``httpx-aiohttp``) took the gateway's CPU per
request from 5.9 to 3.8 ms (docs/benchmarks.md). Redirects, timeouts and decoding stay
httpx's.

``httpx-aiohttp`` reports every ``aiohttp.ClientConnectionError`` (a refused connection,
a server that hung up) as ``httpx.ConnectTimeout``; adapters must tell a timeout from a
provider that is down, so :class:`PooledTransport` gives those back their real kind, in
the request and while the body is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["PooledTransport", "pooled_client"]


def pooled_client(*, max_connections: int, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose connections are aiohttp's, at most ``max_connections``."""
    transport = PooledTransport(limits=httpx.Limits(max_connections=max_connections))
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True)


def _real_kind(exc: httpx.TransportError) -> httpx.TransportError:
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


class _Body(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            raise _real_kind(exc) from exc.__cause__

    async def aclose(self) -> None:
        await self._inner.aclose()


class PooledTransport(AiohttpTransport):
    """``httpx-aiohttp``'s transport with transport errors of their real kind."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise _real_kind(exc) from exc.__cause__
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream)
        return response
