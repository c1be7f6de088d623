"""The SSRF-safe fetcher: address checks, pinning, redirects, caps (no sockets: MockTransport)."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
from collections.abc import Awaitable, Callable

import httpx
import pytest

from pixelgate.errors import UnsafeURL
from pixelgate.media.fetch import (
    FetchFailed,
    SafeFetcher,
    check_literal_url,
    host_allowed,
    is_public_ip,
    parse_url,
)

PUBLIC = "93.184.216.34"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class StubResolver:
    """Answers from a table; a list of answers per host is used in turn (DNS rebinding)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise OSError(f"unknown host {host}")
        return answers.pop(0) if len(answers) > 1 else answers[0]


def _fetcher(
    handler: Handler, table: dict[str, list[list[str]]], allow: tuple[str, ...] = ()
) -> tuple[SafeFetcher, StubResolver, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await handler(request)

    resolver = StubResolver(table)
    client = httpx.AsyncClient(transport=httpx.MockTransport(record), trust_env=False)
    return SafeFetcher(resolver=resolver, client=client, allow_hosts=allow), resolver, seen


def _response(status: int, body: bytes = b"", **headers: str) -> httpx.Response:
    """A response the client streams (``content=`` would be read up front)."""
    return httpx.Response(
        status,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
        stream=httpx.ByteStream(body),
    )


async def _ok(request: httpx.Request) -> httpx.Response:
    return _response(200, b"image-bytes", content_type="image/png")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.0.1",
        "100.64.0.1",
        "100.100.100.200",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::7f00:1",
        "::ffff:0:a9fe:a9fe",  # IPv4-translated (RFC 2765) metadata
        "::ffff:0:7f00:1",
        "::ffff:0:a00:1",
        "64:ff9b:1::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254
        "2002:7f00:1::1",
        "2002:a00:1::1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "2001:db8::1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_ip(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", PUBLIC, "2606:4700::1111", "2002:808:808::1", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert is_public_ip(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pass@example.com/",
        "http:///nohost",
        "http://exa mple.com/",
        "http://example.com\\@evil.test/",
        "javascript:alert(1)",
        "",
    ],
)
def test_bad_urls_are_refused_before_any_lookup(url: str) -> None:
    with pytest.raises(UnsafeURL):
        parse_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0177.0.0.1/",  # octal
        "http://0x7f.0.0.1/",  # hex
        "http://0x7f000001/",
        "http://127.1/",  # short form
        "http://017700000001/",
        "http://0300.0250.0.1/",  # octal 192.168.0.1
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
        "http://[::ffff:a9fe:a9fe]/",  # mapped metadata
        "http://[::ffff:0:a9fe:a9fe]/latest/meta-data/",  # translated metadata
        "http://[::ffff:0:7f00:1]/",
        "http://[::ffff:0:a00:1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254./latest/",  # trailing dot
        "http://10.0.0.1/",
        "http://[::1]:8080/",
    ],
)
async def test_ip_literals_in_every_spelling_are_refused(url: str) -> None:
    fetcher, resolver, seen = _fetcher(_ok, {})
    with pytest.raises(UnsafeURL):
        await fetcher.fetch(url)
    assert seen == [] and resolver.calls == []


async def test_connects_to_the_validated_ip_with_the_original_host_and_sni() -> None:
    fetcher, resolver, seen = _fetcher(_ok, {"images.example": [[PUBLIC]]})
    result = await fetcher.fetch("https://images.example/cat.png?x=1")
    assert result.content == b"image-bytes"
    [request] = seen
    assert request.url.host == PUBLIC
    assert request.url.path == "/cat.png" and request.url.query == b"x=1"
    assert request.headers["host"] == "images.example"
    assert request.extensions["sni_hostname"] == "images.example"
    assert request.headers["accept-encoding"] == "identity, gzip"
    assert resolver.calls == ["images.example"]


async def test_dns_rebinding_cannot_reach_a_private_address() -> None:
    # first answer public, every later one loopback: the fetch uses the one checked answer
    table = {"rebind.example": [[PUBLIC], ["127.0.0.1"]]}
    fetcher, resolver, seen = _fetcher(_ok, table)
    await fetcher.fetch("http://rebind.example/a.png")
    assert [r.url.host for r in seen] == [PUBLIC]
    assert resolver.calls == ["rebind.example"]  # resolved once: no second lookup to rebind
    with pytest.raises(UnsafeURL, match="non-public"):
        await fetcher.fetch("http://rebind.example/a.png")
    assert len(seen) == 1


async def test_any_private_answer_among_several_refuses_the_host() -> None:
    fetcher, _, seen = _fetcher(_ok, {"mixed.example": [[PUBLIC, "10.0.0.1"]]})
    with pytest.raises(UnsafeURL):
        await fetcher.fetch("http://mixed.example/")
    assert seen == []


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:8080/admin",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://internal.example/",
        "file:///etc/passwd",
    ],
)
async def test_a_redirect_to_a_private_address_is_refused(location: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return _response(302, location=location)

    table = {"public.example": [[PUBLIC]], "internal.example": [["10.1.2.3"]]}
    fetcher, _, seen = _fetcher(handler, table)
    with pytest.raises(UnsafeURL):
        await fetcher.fetch("http://public.example/start")
    assert [r.url.host for r in seen] == [PUBLIC]


async def test_redirects_are_followed_by_hand_and_revalidated() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "a.example":
            return _response(301, location="https://b.example/final.png")
        return _response(200, b"final")

    table = {"a.example": [[PUBLIC]], "b.example": [["8.8.8.8"]]}
    fetcher, resolver, seen = _fetcher(handler, table)
    result = await fetcher.fetch(
        "http://a.example/start", headers={"Authorization": "Bearer t", "Accept": "image/*"}
    )
    assert result.content == b"final" and result.url == "https://b.example/final.png"
    assert resolver.calls == ["a.example", "b.example"]
    assert seen[1].url.host == "8.8.8.8"
    assert "authorization" not in seen[1].headers  # dropped on the cross-origin hop
    assert seen[1].headers["accept"] == "image/*"


async def test_more_than_ten_redirects_fail() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return _response(302, location="/again")

    fetcher, _, seen = _fetcher(handler, {"loop.example": [[PUBLIC]]})
    with pytest.raises(FetchFailed) as info:
        await fetcher.fetch("http://loop.example/")
    assert info.value.code == "too_many_redirects"
    assert len(seen) == 11


async def test_send_never_follows_a_redirect() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return _response(307, location="http://127.0.0.1/")

    fetcher, _, seen = _fetcher(handler, {"hook.example": [[PUBLIC]]})
    result = await fetcher.send("POST", "http://hook.example/hook", content=b"{}")
    assert result.status_code == 307 and len(seen) == 1


async def test_declared_length_over_the_cap_is_refused_unread() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return _response(200, b"x" * 2000, content_length="2000")

    fetcher, _, _ = _fetcher(handler, {"big.example": [[PUBLIC]]})
    with pytest.raises(FetchFailed) as info:
        await fetcher.fetch("http://big.example/", max_bytes=1000)
    assert info.value.code == "fetch_too_large"


async def test_streamed_body_over_the_cap_is_refused() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"y" * 300

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())  # no content-length

    fetcher, _, _ = _fetcher(handler, {"big.example": [[PUBLIC]]})
    with pytest.raises(FetchFailed) as info:
        await fetcher.fetch("http://big.example/", max_bytes=1000)
    assert info.value.code == "fetch_too_large"


async def test_gzip_is_decoded_and_a_gzip_bomb_stops_at_the_cap() -> None:
    small = gzip.compress(b"hello")
    bomb = gzip.compress(b"\0" * 5_000_000)

    async def handler(request: httpx.Request) -> httpx.Response:
        body = small if request.url.path == "/small" else bomb
        return _response(200, body, content_encoding="gzip")

    fetcher, _, _ = _fetcher(handler, {"z.example": [[PUBLIC]]})
    assert (await fetcher.fetch("http://z.example/small")).content == b"hello"
    with pytest.raises(FetchFailed) as info:
        await fetcher.fetch("http://z.example/bomb", max_bytes=100_000)
    assert info.value.code == "fetch_too_large"


async def test_unboundable_encodings_are_refused() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return _response(200, b"...", content_encoding="br")

    fetcher, _, _ = _fetcher(handler, {"br.example": [[PUBLIC]]})
    with pytest.raises(FetchFailed) as info:
        await fetcher.fetch("http://br.example/")
    assert info.value.code == "fetch_encoding"


async def test_total_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    fetcher, _, _ = _fetcher(handler, {"slow.example": [[PUBLIC]]})
    with pytest.raises(FetchFailed) as info:
        await fetcher.fetch("http://slow.example/", timeout_s=0.1)
    assert info.value.code == "fetch_timeout"


async def test_non_2xx_fails() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return _response(404)

    fetcher, _, _ = _fetcher(handler, {"gone.example": [[PUBLIC]]})
    with pytest.raises(FetchFailed, match="404"):
        await fetcher.fetch("http://gone.example/")


async def test_allow_list_admits_named_private_hosts_but_never_metadata() -> None:
    table = {"hooks.internal": [["127.0.0.1"]], "meta.internal": [["169.254.169.254"]]}
    allow = ("hooks.internal", "meta.internal", "169.254.169.254", "127.0.0.1")
    fetcher, _, seen = _fetcher(_ok, table, allow=allow)
    await fetcher.fetch("http://hooks.internal:8080/x")
    await fetcher.fetch("http://127.0.0.1:9/x")
    assert [r.url.host for r in seen] == ["127.0.0.1", "127.0.0.1"]
    assert seen[0].headers["host"] == "hooks.internal:8080"
    for url in ("http://meta.internal/", "http://169.254.169.254/"):
        with pytest.raises(UnsafeURL, match="metadata"):
            await fetcher.fetch(url)
    # the per-call list replaces the default one
    with pytest.raises(UnsafeURL):
        await fetcher.fetch("http://hooks.internal:8080/x", allow_hosts=())


def test_allow_list_matching() -> None:
    assert host_allowed("hooks.example", ["Hooks.Example."])
    assert host_allowed("a.b.example", [".example"])
    assert not host_allowed("example", [".example"])
    assert not host_allowed("evilhooks.example", ["hooks.example"])
    assert host_allowed("::1", ["[::1]"])


async def test_unresolvable_host_is_refused() -> None:
    fetcher, _, _ = _fetcher(_ok, {})
    with pytest.raises(UnsafeURL) as info:
        await fetcher.fetch("http://nowhere.example/")
    assert info.value.code == "unresolvable_host"


async def test_the_client_ignores_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    fetcher = SafeFetcher()
    try:
        assert fetcher.client.trust_env is False
        assert fetcher.client._mounts == {}  # no proxy transport was set up
    finally:
        await fetcher.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/",
        "http://2130706433/",
        "http://[::ffff:0:7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://10.0.0.1/",
    ],
)
def test_literal_check_refuses_unsafe_literals_without_dns(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_literal_url(url, what="reference_image_url")


def test_literal_check_leaves_names_to_fetch_time_and_honours_the_allow_list() -> None:
    assert check_literal_url("http://internal.example/a.png").host == "internal.example"
    assert check_literal_url("http://127.0.0.1:9/", allow_hosts=["127.0.0.1"]).port == 9
    with pytest.raises(UnsafeURL, match="metadata"):
        check_literal_url("http://169.254.169.254/", allow_hosts=["169.254.169.254"])
