"""The SSRF corpus (``tests/data/ssrf_corpus.txt``) against every entry point that takes a
URL: each URL is refused — at admission when that needs no DNS, else when fetched — and
the canary listening where the URLs point is never reached (issue 14, "In CI, for good")."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from pixelgate.config import Settings
from tests.fakes import register_capturing_provider

CORPUS = Path(__file__).parents[1] / "data" / "ssrf_corpus.txt"
REDIRECTOR_HOST = "127.0.0.2"  # allow-listed: it stands for a public host that redirects
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})
MIN_CORPUS = 60


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True
    hits: list[str]


def _serve(server: _Recorder) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


class _CanaryHandler(BaseHTTPRequestHandler):
    def _hit(self) -> None:
        self.server.hits.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = _hit

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Canary6(_Recorder):
    address_family = socket.AF_INET6


@pytest.fixture
def canary() -> Iterator[tuple[int, list[str]]]:
    """Listens on 127.0.0.1:PORT and, where IPv6 exists, [::1]:PORT; records every hit."""
    hits: list[str] = []
    v4 = _Recorder(("127.0.0.1", 0), _CanaryHandler)
    v4.hits = hits
    port = v4.server_address[1]
    servers = [v4]
    try:
        v6 = _Canary6(("::1", port), _CanaryHandler)
        v6.hits = hits
        servers.append(v6)
    except OSError:
        pass  # no IPv6 loopback here: the [::1] entries are still checked for refusal
    for server in servers:
        _serve(server)
    yield port, hits
    for server in servers:
        server.shutdown()
        server.server_close()


def load_corpus(port: int) -> list[tuple[str, bool]]:
    """``(url, via_redirect)`` for each corpus line, ``{port}`` filled in."""
    entries: list[tuple[str, bool]] = []
    for line in CORPUS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text = line.replace("{port}", str(port))
        if text.startswith("redirect "):
            entries.append((text.removeprefix("redirect "), True))
        else:
            entries.append((text, False))
    return entries


@pytest.fixture
def redirector() -> Iterator[Callable[[str], str]]:
    """An allow-listed host answering 302 to a target; returns ``url_for(target)``."""
    targets: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            index = int(self.path.strip("/").split("/")[-1].split(".")[0])
            self.send_response(302)
            self.send_header("Location", targets[index])
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = _Recorder((REDIRECTOR_HOST, 0), Handler)
    server.hits = []
    _serve(server)

    def url_for(target: str) -> str:
        targets.append(target)
        return f"http://{REDIRECTOR_HOST}:{server.server_address[1]}/r/{len(targets) - 1}.png"

    yield url_for
    server.shutdown()
    server.server_close()


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings],
    gateway: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[httpx.AsyncClient]:
    register_capturing_provider(monkeypatch)
    settings = make_settings(
        providers={"cap": {"kind": "capture"}},
        routing={"default": ["cap"]},
        fetch_allow_hosts=[REDIRECTOR_HOST],
        webhook_allow_hosts=[REDIRECTOR_HOST],
        webhook_max_attempts=1,
        fetch_timeout_s=5,
    )
    async with gateway(settings) as (_, c):
        await c.post("/admin/accounts", json={"name": "target"})
        yield c


Submit = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


def _json(path: str, body: Callable[[str], dict[str, Any]], method: str = "POST") -> Submit:
    async def submit(client: httpx.AsyncClient, url: str) -> httpx.Response:
        return await client.request(method, path, json=body(url))

    return submit


SMALL = {"prompt": "ssrf", "width": 64, "height": 64}
ENTRY_POINTS: dict[str, Submit] = {
    "native reference_image_url": _json(
        "/v1/generations", lambda u: {**SMALL, "reference_image_url": u}
    ),
    "native image_url": _json("/v1/generations", lambda u: {**SMALL, "image_url": u}),
    "native webhook_url": _json("/v1/generations", lambda u: {**SMALL, "webhook_url": u}),
    "batch image_url": _json("/v1/batches", lambda u: {"requests": [{**SMALL, "image_url": u}]}),
    "openai reference_image_url": _json(
        "/v1/images/generations", lambda u: {"prompt": "x", "reference_image_url": u}
    ),
    "seed004 referenceImageUrl": _json(
        "/api/generate", lambda u: {"prompt": "x", "referenceImageUrl": u}
    ),
    "account webhook": _json("/v1/webhooks", lambda u: {"url": u}, "PUT"),
    "admin account webhook_url": _json(
        "/admin/accounts/target", lambda u: {"webhook_url": u}, "PATCH"
    ),
}


def _generation_ids(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("generation_ids"), list):
        return [str(i) for i in body["generation_ids"]]
    for key in ("id", "jobId"):
        if isinstance(body.get(key), str) and str(body[key]).startswith("gen_"):
            return [str(body[key])]
    return []


async def _wait_terminal(client: httpx.AsyncClient, gen_id: str) -> dict[str, Any]:
    for _ in range(300):
        body: dict[str, Any] = (await client.get(f"/v1/generations/{gen_id}")).json()
        if body["status"] in TERMINAL:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{gen_id} did not finish: {body}")


def test_the_corpus_is_large_and_covers_every_kind() -> None:
    entries = load_corpus(1)
    assert len(entries) >= MIN_CORPUS
    text = CORPUS.read_text()
    for needle in ("169.254.169.254", "fd00:ec2::254", "::ffff:0:", "64:ff9b", "2002:", "2001:0:"):
        assert needle in text
    assert any(redirect for _, redirect in entries)


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
async def test_every_corpus_url_is_refused_and_the_canary_is_never_hit(
    client: httpx.AsyncClient,
    canary: tuple[int, list[str]],
    redirector: Callable[[str], str],
    entry_point: str,
) -> None:
    port, hits = canary
    submit = ENTRY_POINTS[entry_point]
    webhook = "webhook" in entry_point
    accepted: list[tuple[str, str]] = []
    for url, via_redirect in load_corpus(port):
        sent = redirector(url) if via_redirect else url
        r = await submit(client, sent)
        ids = _generation_ids(r.json()) if r.status_code < 300 else []
        if r.status_code >= 400:
            assert r.status_code < 500, (url, r.status_code, r.text)
            continue
        if via_redirect or webhook:
            # the redirecting host is allowed, and a name is resolved only when it is used
            accepted.extend((url, gen_id) for gen_id in ids)
            continue
        assert "localhost" in url.lower(), f"{entry_point} accepted {url!r}: {r.text}"
        accepted.extend((url, gen_id) for gen_id in ids)
    for url, gen_id in accepted:
        body = await _wait_terminal(client, gen_id)
        if not webhook:
            assert body["status"] == "FAILED", (url, body)
            assert body["error"]["code"] in ("unsafe_url", "fetch_failed"), (url, body["error"])
    await asyncio.sleep(0.3)  # webhooks are delivered after the finish
    assert hits == [], f"the canary was reached through {entry_point}: {hits}"
