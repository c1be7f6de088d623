"""The process's pooled provider client (httpx over aiohttp's pool) against real loopback
servers: connections are reused, and every transport failure arrives as the provider
error the adapters rely on (``Transient`` or ``ProviderTimeout``), never as a raw
aiohttp exception."""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from pixelgate.errors import ProviderTimeout, Transient
from pixelgate.providers._http import request
from pixelgate.providers._pool import pooled_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok": 1}\r\n'


class Loopback:
    """A raw TCP server on 127.0.0.1 that counts the connections it accepted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/images"


async def _serve_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        writer.write(OK)
        await writer.drain()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"this is not HTTP at all\r\n\r\n")
    await writer.drain()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")  # then close without a byte of answer


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(30)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Loopback]]]:
    started: list[Loopback] = []

    async def start(handler: Handler) -> Loopback:
        loopback = Loopback(handler)
        loopback.server = await asyncio.start_server(loopback._accept, "127.0.0.1", 0)
        started.append(loopback)
        return loopback

    yield start
    for loopback in started:
        assert loopback.server is not None
        loopback.server.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    http = pooled_client(max_connections=8, timeout=httpx.Timeout(5.0, connect=2.0))
    yield http
    await http.aclose()


async def test_connections_are_pooled_and_reused(serve, client) -> None:
    server = await serve(_serve_ok)
    for _ in range(3):
        answers = await asyncio.gather(
            *(request(client, "fake", "POST", server.url, json={"n": i}) for i in range(8))
        )
        assert [a.json() for a in answers] == [{"ok": 1}] * 8
    assert 1 <= server.connections <= 8  # 24 requests, at most the pool's 8 connections


async def test_a_refused_connection_is_transient(client) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(Transient, match="fake"):
        await request(client, "fake", "POST", f"http://127.0.0.1:{port}/v1", json={})


@pytest.mark.parametrize("handler", [_garbage, _hang_up], ids=["not-http", "hang-up"])
async def test_a_broken_answer_is_transient(serve, client, handler: Handler) -> None:
    server = await serve(handler)
    with pytest.raises(Transient, match="fake"):
        await request(client, "fake", "POST", server.url, json={})


async def test_a_silent_server_times_out(serve, client) -> None:
    server = await serve(_silent)
    with pytest.raises(ProviderTimeout):
        await request(client, "fake", "POST", server.url, json={}, timeout=0.3)


def test_a_start_that_calls_no_provider_never_loads_aiohttp(tmp_path: Any) -> None:
    """The aiohttp transport is made on the first provider call: a gateway that only
    serves the placeholder pays neither aiohttp's import nor its SSL context."""
    script = (
        "import asyncio, sys\n"
        "from pixelgate.config import Settings\n"
        "from pixelgate.api.app import create_app\n"
        "from pixelgate.runtime import Runtime\n"
        "async def main():\n"
        "    runtime = await Runtime.open(Settings())\n"
        "    create_app(Settings())\n"
        "    await runtime.close()\n"
        "    print('aiohttp' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    env["PIXELGATE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


class _Recorder:
    """Answers each request with the next of ``answers`` (the last one repeats) and keeps
    every request's method, path, headers and body."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            first, *lines = head.decode().split("\r\n")
            headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            method, path, _ = first.split(" ")
            self.seen.append((method, path, headers, body))
            writer.write(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])
            await writer.drain()


def _answer(status: str, *headers: str) -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{lines}Content-Length: 11\r\n\r\n".encode() + b'{"ok": 1}\r\n'


@pytest.mark.parametrize(
    ("kwargs", "path", "body"),
    [
        (
            {"json": {"prompt": "é"}, "headers": {"X-Key": "k"}},
            "/v1/images",
            b'{"prompt":"\xc3\xa9"}',
        ),
        (
            {"json": {"prompt": "é"}, "headers": {"X-Key": "k"}, "params": {"a": "1"}},
            "/v1/images?a=1",
            b'{"prompt":"\xc3\xa9"}',
        ),
        ({"content": b"raw", "headers": {"Content-Type": "text/plain"}}, "/v1/images", b"raw"),
        (
            {"json": [1], "headers": {"Content-Type": "application/vnd.x+json"}},
            "/v1/images",
            b"[1]",
        ),
        ({}, "/v1/images", b""),
    ],
    ids=["json", "params", "bytes", "own-content-type", "no-body"],
)
async def test_a_plain_call_sends_what_the_whole_client_sends(
    serve, client, monkeypatch, kwargs: dict[str, Any], path: str, body: bytes
) -> None:
    recorder = _Recorder(_answer("200 OK", "Content-Type: application/json"))
    server = await serve(recorder)
    whole = await client.request("POST", server.url, timeout=5, **kwargs)

    async def refused(*args: Any, **kw: Any) -> None:
        raise AssertionError("the plain call went through the whole client")

    monkeypatch.setattr(client, "request", refused)
    plain = await request(client, "fake", "POST", server.url, timeout=5, **kwargs)
    assert plain.json() == whole.json() == {"ok": 1}
    assert plain.status_code == 200 and plain.request.url == whole.request.url
    assert plain.request.method == "POST" and plain.request.content == body
    (m1, p1, h1, b1), (m2, p2, h2, b2) = recorder.seen
    assert (m1, p1, b1) == (m2, p2, b2) == ("POST", path, body)
    assert h1 == h2  # default headers of the client included (user-agent, accept...)


async def test_a_plain_call_with_a_body_goes_to_aiohttp_straight(
    serve, client, monkeypatch
) -> None:
    """No ``httpx.Request`` and no transport stream: the ~40 µs a provider call saves."""
    server = await serve(_Recorder(_answer("200 OK", "Content-Type: application/json")))

    async def refused(*args: Any, **kw: Any) -> None:
        raise AssertionError("the call went through the httpx transport")

    monkeypatch.setattr(client.pooled, "handle_async_request", refused)
    answer = await request(client, "fake", "POST", server.url, json={"n": 1})
    assert answer.json() == {"ok": 1} and answer._request is None  # built when asked


async def test_a_compressed_answer_is_decoded_as_httpx_does(serve, client) -> None:
    packed = gzip.compress(b'{"ok": 2}')
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(packed)}\r\n\r\n"
    ).encode()
    server = await serve(_Recorder(head + packed))
    answer = await request(client, "fake", "POST", server.url, json={"n": 1})
    assert answer.json() == {"ok": 2}
    assert answer.headers["content-encoding"] == "gzip"  # as the provider sent it


@pytest.mark.parametrize(
    ("status", "method", "body"),
    [("307 Temporary Redirect", "POST", b'{"n":1}'), ("303 See Other", "GET", b"")],
)
async def test_a_redirect_is_followed_once_the_way_httpx_does(
    serve, client, status: str, method: str, body: bytes
) -> None:
    recorder = _Recorder(_answer(status, "Location: /v1/done"), _answer("200 OK"))
    server = await serve(recorder)
    answer = await request(client, "fake", "POST", server.url, json={"n": 1})
    assert answer.status_code == 200 and len(answer.history) == 1
    assert [(m, p, b) for m, p, _, b in recorder.seen] == [
        ("POST", "/v1/images", b'{"n":1}'),
        (method, "/v1/done", body),
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_no_cookie_rides_along_with_a_later_call(serve, client, host: str) -> None:
    """Not by a name either (aiohttp's own jar keeps the cookies of named hosts)."""
    recorder = _Recorder(_answer("200 OK", "Set-Cookie: session=tenant-a; Path=/"))
    server = await serve(recorder)
    url = server.url.replace("127.0.0.1", host)
    await request(client, "fake", "GET", url)
    await request(client, "fake", "POST", url, json={"n": 1})
    await client.request("GET", url)  # the whole client stores none either
    await request(client, "fake", "GET", url)
    assert len(recorder.seen) == 4
    assert all("cookie" not in headers for _, _, headers, _ in recorder.seen)
