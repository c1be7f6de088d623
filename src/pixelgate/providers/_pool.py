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
import functools
import json
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from http.cookiejar import Cookie, CookieJar
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

__all__ = ["PLAIN_ARGUMENTS", "PooledClient", "PooledTransport", "pooled_client"]


#: the keyword arguments :meth:`PooledClient.plain_request` takes; any other (``files``,
#: ``data``, ``auth``…) goes through httpx's whole client
PLAIN_ARGUMENTS = frozenset({"headers", "json", "content", "params"})


def pooled_client(*, max_connections: int, timeout: httpx.Timeout) -> PooledClient:
    """An ``httpx.AsyncClient`` whose connections are aiohttp's, at most ``max_connections``."""
    transport = PooledTransport(limits=httpx.Limits(max_connections=max_connections))
    return PooledClient(transport, timeout=timeout)


@functools.lru_cache(maxsize=1024)
def _parsed(url: str) -> httpx.URL:
    """A provider's endpoints parsed once (httpx parses a URL string on every request;
    ``httpx.URL(url)`` of a parsed one is a copy)."""
    return httpx.URL(url)


class _NoCookies(CookieJar):
    """Provider calls carry no cookies: the client is shared by every tenant's jobs, and a
    cookie one provider answer set must not ride along with another tenant's request."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


class PooledClient(httpx.AsyncClient):
    """The pooled client, with a shorter way for the plain requests of provider adapters.

    :meth:`plain_request` builds the request as ``request()`` would (the client's default
    headers, the timeout as a request extension) and hands it to the transport directly,
    skipping the client's auth flow, event hooks and cookie handling, which a provider
    call does not use: ~0.1-0.25 ms of CPU per call here (docs/benchmarks.md). A redirect
    answer is followed by the whole client.
    """

    def __init__(self, transport: PooledTransport, *, timeout: httpx.Timeout) -> None:
        super().__init__(
            transport=transport,
            timeout=timeout,
            follow_redirects=True,
            cookies=httpx.Cookies(_NoCookies()),
        )
        self.pooled = transport

    async def plain_request(
        self, method: str, url: str, *, timeout: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """``request(method, url, timeout=timeout, **kwargs)`` for ``kwargs`` within
        :data:`PLAIN_ARGUMENTS`, the response read.

        A request with a JSON or bytes body and no query parameters goes to aiohttp's
        session straight, without an ``httpx.Request``, the transport's stream wrappers
        and the chunk-by-chunk read (~40 µs of CPU per call here, docs/benchmarks.md):
        the same headers, body, timeouts and errors as the whole client's."""
        headers = self.headers.copy()
        if kwargs.get("headers"):
            headers.update(kwargs["headers"])
        body = _plain_body(kwargs, headers)
        if body is None:
            return await self._through_transport(method, url, timeout, headers, kwargs)
        session = self.pooled.session()
        try:
            with _aiohttp_errors():
                async with session.request(
                    method,
                    url,
                    headers=headers.multi_items(),
                    data=body or None,
                    allow_redirects=False,
                    auto_decompress=False,
                    compress=False,
                    timeout=_client_timeout(timeout),
                ) as answer:
                    data = await answer.read()
        except Exception as exc:
            if not _translatable(exc):
                raise
            raise _real_kind(exc) from exc.__cause__ or exc
        extensions = {"http_version": b"HTTP/1.1"}
        if answer.reason:
            extensions["reason_phrase"] = answer.reason.encode()
        response = _PlainResponse(
            answer.status,
            headers=answer.raw_headers,
            stream=httpx.ByteStream(data),
            extensions=extensions,
        )
        response.sent = (method, url, headers, body)
        response.read()  # decoded as the content encoding says, as ``aread`` would
        if response.is_redirect:
            return await self._follow(response.request, response)
        return response

    async def _through_transport(
        self,
        method: str,
        url: str,
        timeout: float | None,
        headers: httpx.Headers,
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        limits = httpx.Timeout(timeout)  # as request(timeout=None): no timeout
        request = httpx.Request(
            method,
            _parsed(url),
            headers=headers,
            json=kwargs.get("json"),
            content=kwargs.get("content"),
            params=kwargs.get("params"),
            extensions={"timeout": limits.as_dict()},
        )
        response = await self.pooled.handle_async_request(request)
        response.request = request
        if response.is_redirect:
            await response.aread()
            return await self._follow(request, response)
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _follow(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        """httpx's own next hop (method, body and headers as its redirect rules say), then
        the whole client for the rest of the way."""
        following = self._build_redirect_request(request, response)
        final = await self.send(following, follow_redirects=True)
        final.history = [response, *final.history]
        return final


def _plain_body(kwargs: dict[str, Any], headers: httpx.Headers) -> bytes | None:
    """The body a request without query parameters sends, encoded as httpx would
    (adding its ``Content-Type`` unless one is set); ``None`` for one that needs the
    transport's way (parameters, a streamed body)."""
    if kwargs.get("params"):
        return None
    if kwargs.get("json") is not None:
        if "content-type" not in headers:
            headers["Content-Type"] = "application/json"
        return json.dumps(
            kwargs["json"], ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
    content = kwargs.get("content")
    if content is None or isinstance(content, bytes):
        return content or b""
    if isinstance(content, str):
        return content.encode()
    return None


@functools.lru_cache(maxsize=64)
def _client_timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for httpx's ``timeout=seconds``, as ``httpx-aiohttp`` maps them."""
    import aiohttp

    return aiohttp.ClientTimeout(sock_connect=seconds, sock_read=seconds, connect=seconds)


def _aiohttp_errors() -> AbstractContextManager[None]:
    """aiohttp's errors as ``httpx-aiohttp`` reports them (then :func:`_real_kind`)."""
    from httpx_aiohttp.transport import map_aiohttp_exceptions

    return map_aiohttp_exceptions()


class _PlainResponse(httpx.Response):
    """A response of :meth:`PooledClient.plain_request`: its ``httpx.Request`` is built
    only when something asks for it (an error message, a redirect), not on every call."""

    sent: tuple[str, str, httpx.Headers, bytes]

    @property
    def request(self) -> httpx.Request:
        if self._request is None:
            method, url, headers, body = self.sent
            self._request = httpx.Request(method, _parsed(url), headers=headers, content=body)
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value


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

            self._inner = AiohttpTransport(limits=self._limits, client=self._new_session)
        return self._inner

    def _new_session(self) -> aiohttp.ClientSession:
        """The session ``httpx-aiohttp`` would make, without a cookie jar: aiohttp's own
        keeps the cookies a named host sets and sends them with every later call to it,
        whichever tenant's job makes it (and filtering them costs every call)."""
        import aiohttp

        assert self._inner is not None
        limit = self._limits.max_connections
        connector = aiohttp.TCPConnector(
            keepalive_timeout=self._limits.keepalive_expiry,
            ssl=self._inner.ssl_context,
            limit=100 if limit is None else limit,  # 100: aiohttp's default
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    def session(self) -> aiohttp.ClientSession:
        """The transport's aiohttp session (its pool), made as its first request would."""
        import aiohttp

        transport = self._transport()
        if not isinstance(transport.client, aiohttp.ClientSession):
            transport.client = transport.get_client()
        return transport.client

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
