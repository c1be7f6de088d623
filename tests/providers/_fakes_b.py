"""Fake-server helpers for the replicate/fal/ideogram/unsplash/horde/comfyui adapter tests.

Each test writes its fake provider as a plain function of ``httpx.Request`` (sync or
async); :class:`FakeServer` records every request and serves it through
``httpx.MockTransport``, so no test ever reaches the network.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx

from pixelgate.errors import ProviderError
from tests.fakes import FakeJobContext

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]

#: a recognisable fake key, so tests can assert it never leaks into messages
SECRET = "sk-SECRET-test-key-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


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
        return FakeJobContext(http=self.client(), provider_job_id=provider_job_id)

    def seen(self, method: str, path: str | None = None) -> list[httpx.Request]:
        return [
            r for r in self.requests if r.method == method and (path is None or r.url.path == path)
        ]


def body(request: httpx.Request) -> Any:
    """The request's JSON body."""
    return json.loads(request.content)


def multipart(request: httpx.Request) -> dict[str, tuple[str, bytes]]:
    """The parts of a multipart/form-data body: name -> (content type, payload)."""
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data"), content_type
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.content
    message = BytesParser(policy=HTTP).parsebytes(raw)
    parts: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        parts[name] = (part.get_content_type(), payload)
    return parts


def reply(status: int = 200, payload: Any = None, **kwargs: Any) -> httpx.Response:
    """A JSON response."""
    return httpx.Response(status, json=payload, **kwargs)


def assert_hidden(exc: ProviderError, secret: str = SECRET) -> None:
    """The key appears nowhere in what an error would show."""
    assert secret not in str(exc)
    assert secret not in exc.message
    assert all(secret not in str(arg) for arg in exc.args)
