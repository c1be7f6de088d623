"""The one kit of helpers for the provider adapter tests.

A test writes its fake provider as a plain function of ``httpx.Request`` (sync or
async); :class:`FakeServer` records every request and serves it through
``httpx.MockTransport``, so no adapter test reaches the network. The helpers here read
what the adapter sent (:func:`json_body`, :func:`multipart`), answer it (:func:`reply`,
:func:`hang`, :func:`read_timeout`, :func:`connect_error`) and check that the fake key
never shows in an error (:func:`assert_secret_absent`). Provider-specific fakes live in
``tests/providers/fakes/`` and are built on this module.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from pixelgate.errors import ProviderError
from tests.fakes import FakeJobContext, Received, Reply

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]

#: bytes that start like a PNG / JPEG (not decodable: adapter tests only; use
#: ``tests.fakes.png_bytes`` for an image that must decode)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(64))
#: a recognisable fake key, so tests can assert it never leaks into messages
SECRET = "sk-test-SECRET-0123456789"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- serving -------------------------------------------------------------------------


class FakeServer:
    """Serves requests with ``handler`` and keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        result = self.handler(request)
        if inspect.isawaitable(result):
            result = await result
        return result

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))

    def context(self, provider_job_id: str | None = None) -> FakeJobContext:
        """A job context whose HTTP client is served by this fake."""
        return FakeJobContext(http=self.client(), provider_job_id=provider_job_id)

    def seen(self, method: str, path: str | None = None) -> list[httpx.Request]:
        return [
            r for r in self.requests if r.method == method and (path is None or r.url.path == path)
        ]


def client(handler: Handler) -> httpx.AsyncClient:
    """A client served by ``handler`` (wrapped in a :class:`FakeServer` unless it is one)."""
    server = handler if isinstance(handler, FakeServer) else FakeServer(handler)
    return server.client()


def ctx(http: httpx.AsyncClient) -> FakeJobContext:
    return FakeJobContext(http=http)


def loopback_routes(handler: Callable[[httpx.Request], Any], paths: list[str]) -> dict[str, Any]:
    """``LoopbackServer`` routes (tests/fakes.py) that answer ``paths`` with a sync
    ``handler``, for tests that go through the app's real HTTP client on 127.0.0.1."""

    def route(received: Received) -> Reply:
        request = httpx.Request(
            received.method,
            "http://127.0.0.1" + received.path,
            headers=received.headers,
            content=received.body,
        )
        response = handler(request)
        assert isinstance(response, httpx.Response), "async handlers need the MockTransport"
        return as_reply(response)

    return {path: route for path in paths}


def as_reply(response: httpx.Response) -> Reply:
    """``response`` as a ``LoopbackServer`` route's answer (which sets Content-Length)."""
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    headers.setdefault("content-type", "text/plain")
    return response.status_code, headers, response.content


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON answer of a ``LoopbackServer`` route."""
    return as_reply(reply(status, payload, headers))


# -- answering -----------------------------------------------------------------------


def reply(
    status: int = 200, payload: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    """A JSON response."""
    return httpx.Response(status, json=payload, headers=headers)


def hang(seconds: float = 5.0) -> Handler:
    """A server that answers only after ``seconds`` (well past the test's timeout_s)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return reply(200, {})

    return handler


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out reading", request=request)


def connect_error(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


# -- reading what was sent -----------------------------------------------------------


def json_body(request: httpx.Request) -> Any:
    """The request's JSON body (fails unless it was sent as ``application/json``)."""
    assert request.headers["content-type"].startswith("application/json")
    return json.loads(request.content)


@dataclass
class Part:
    name: str
    filename: str | None
    #: the part's Content-Type (``text/plain`` when it sent none)
    content_type: str
    data: bytes


@dataclass
class Multipart:
    parts: list[Part] = field(default_factory=list)

    def part(self, name: str) -> Part:
        """The single part ``name`` (fails when absent or repeated)."""
        matches = [p for p in self.parts if p.name == name]
        assert len(matches) == 1, f"expected one {name!r} part, got {len(matches)}"
        return matches[0]

    def field(self, name: str) -> str:
        """The single text field ``name`` (fails when absent, repeated or a file)."""
        part = self.part(name)
        assert part.filename is None, f"{name!r} should be a text field"
        return part.data.decode()

    def files(self, name: str) -> list[Part]:
        return [p for p in self.parts if p.name == name and p.filename is not None]

    def names(self) -> set[str]:
        return {p.name for p in self.parts}


def multipart(request: httpx.Request) -> Multipart:
    """Parse a ``multipart/form-data`` request body into its parts."""
    return parse_multipart(request.headers["content-type"], request.content)


def parse_multipart(content_type: str, content: bytes) -> Multipart:
    assert content_type.startswith("multipart/form-data; boundary="), content_type
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + content
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    parsed = Multipart()
    for part in message.iter_parts():
        disposition = part.get("content-disposition", "")
        assert disposition.startswith("form-data")
        name = part.get_param("name", header="content-disposition")
        assert isinstance(name, str)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parsed.parts.append(
            Part(
                name=name,
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                data=payload,
            )
        )
    return parsed


def bearer(request: httpx.Request) -> str | None:
    """The bearer token of the ``Authorization`` header, if it has one."""
    raw = request.headers.get("authorization", "")
    return raw.removeprefix("Bearer ") if raw.startswith("Bearer ") else None


def assert_secret_absent(exc: BaseException, secret: str = SECRET) -> None:
    """The key appears nowhere in what an error would show."""
    texts = [str(exc), repr(exc), *(str(a) for a in exc.args)]
    if isinstance(exc, ProviderError):
        texts.append(exc.message)
    for text in texts:
        assert secret not in text, f"API key leaked in {type(exc).__name__}: {text}"
