"""Helpers for the fake provider servers of the OpenAI, Gemini, Imagen and Stability tests.

Each test module builds a fake server as an ``httpx.MockTransport`` handler that
checks what the adapter sends against PROVIDERS.md and answers with the
documented shapes. Nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from pixelgate.errors import ProviderError
from tests.fakes import FakeJobContext

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(64))
MASK = b"\x89PNG\r\n\x1a\n" + b"mask" * 8
SECRET = "sk-test-SECRET-0123456789"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def client(handler: Handler) -> httpx.AsyncClient:
    async def serve(request: httpx.Request) -> httpx.Response:
        result = handler(request)
        return result if isinstance(result, httpx.Response) else await result

    return httpx.AsyncClient(transport=httpx.MockTransport(serve))


def ctx(http: httpx.AsyncClient) -> FakeJobContext:
    return FakeJobContext(http=http)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def json_body(request: httpx.Request) -> dict[str, Any]:
    assert request.headers["content-type"].startswith("application/json")
    body = json.loads(request.content)
    assert isinstance(body, dict)
    return body


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Multipart:
    parts: list[Part] = field(default_factory=list)

    def field(self, name: str) -> str:
        """The single text field ``name`` (fails when absent, repeated or a file)."""
        matches = [p for p in self.parts if p.name == name]
        assert len(matches) == 1, f"expected one {name!r} part, got {len(matches)}"
        assert matches[0].filename is None, f"{name!r} should be a text field"
        return matches[0].data.decode()

    def files(self, name: str) -> list[Part]:
        return [p for p in self.parts if p.name == name and p.filename is not None]

    def names(self) -> set[str]:
        return {p.name for p in self.parts}


def multipart(request: httpx.Request) -> Multipart:
    """Parse a ``multipart/form-data`` request body into its parts."""
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.content
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    parsed = Multipart()
    for part in message.iter_parts():
        disposition = part.get("content-disposition", "")
        assert disposition.startswith("form-data")
        name = part.get_param("name", header="content-disposition")
        assert isinstance(name, str)
        payload = part.get_payload(decode=True)
        parsed.parts.append(
            Part(
                name=name,
                filename=part.get_filename(),
                content_type=part.get("content-type"),
                data=payload if isinstance(payload, bytes) else b"",
            )
        )
    return parsed


def hang(seconds: float = 5.0) -> Handler:
    """A server that answers only after ``seconds`` (well past the test's timeout_s)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return httpx.Response(200, json={})

    return handler


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out reading", request=request)


def connect_error(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def assert_secret_absent(exc: BaseException, secret: str = SECRET) -> None:
    texts = [str(exc), repr(exc), *(str(a) for a in exc.args)]
    if isinstance(exc, ProviderError):
        texts.append(exc.message)
    for text in texts:
        assert secret not in text, f"API key leaked in {type(exc).__name__}: {text}"


class Recorder:
    """Wraps a handler and keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        result = self.handler(request)
        return result if isinstance(result, httpx.Response) else await result
