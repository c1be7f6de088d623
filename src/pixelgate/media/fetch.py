"""SSRF-safe fetching of user-supplied URLs: reference and input images, webhooks.

The pattern of LIBRARIES.md §(f):

1. only ``http`` and ``https``; no credentials in the URL;
2. resolve the host once (``getaddrinfo`` in a thread) and refuse it when **any**
   address is not public — loopback, private, link-local (cloud metadata), CGNAT,
   0/8, reserved, multicast, IPv6 ULA/link-local, and IPv4 carried inside IPv6
   (mapped, translated, compatible, 6to4, NAT64, Teredo). Numeric hosts the C resolver would
   read as IPv4 (``2130706433``, ``0177.0.0.1``, ``0x7f.1``) are decoded here first;
3. connect to the validated IP literal with the original ``Host`` header and the TLS
   ``sni_hostname`` extension, so there is no second lookup to rebind;
4. never let httpx follow redirects: each hop is re-validated (at most 10), and
   credentials are dropped on a cross-origin hop;
5. stream under a byte cap and one total timeout, accepting only ``identity`` or
   ``gzip`` (decompressed here with a bounded output);
6. ``trust_env=False``: proxy variables cannot route a request around the checks.

Hosts on an allow-list (configuration; empty by default) skip the public-address
check — that is how private deployments and the tests reach a loopback server — but
cloud-metadata addresses are refused even then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from pixelgate.errors import PixelgateError, UnsafeURL

__all__ = [
    "FetchFailed",
    "FetchResult",
    "Resolver",
    "SafeFetcher",
    "Target",
    "check_literal_url",
    "check_url_syntax",
    "host_allowed",
    "is_public_ip",
    "parse_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> addresses``; the default runs ``getaddrinfo`` in a thread
Resolver = Callable[[str, int], Awaitable[list[str]]]

SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REDIRECTS = 10
MAX_URL_LENGTH = 2048
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
ACCEPT_ENCODING = "identity, gzip"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
READ_CHUNK = 64 * 1024

_BLOCKED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this" network
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT, incl. Alibaba's metadata 100.100.100.200
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # NAT64 local use (RFC 8215): operator-defined embedding
        "100::/64",  # discard
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: IPv4-translated addresses (RFC 2765 SIIT): ``::ffff:0:a.b.c.d``
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
#: refused even for allow-listed hosts (a DNS change must not reach them)
_METADATA = frozenset(
    ipaddress.ip_address(ip)
    for ip in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "168.63.129.16",
        "100.100.100.200",
        "192.0.0.192",
        "169.254.42.42",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "fd20:ce::254",
    )
)
_HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
# what inet_aton() accepts: 1-4 parts, each decimal, octal (leading 0) or hex (0x)
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")


class FetchFailed(PixelgateError):
    """The URL was acceptable but the fetch failed (network, status, size, encoding)."""

    code = "fetch_failed"


@dataclass(frozen=True)
class Target:
    """A checked URL: scheme, normalised host, port, and the IP if the host is a literal."""

    url: httpx.URL
    scheme: str
    host: str
    port: int
    literal: IPAddress | None

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


@dataclass(frozen=True)
class FetchResult:
    url: str
    status_code: int
    headers: httpx.Headers
    content: bytes


def parse_url(url: str, *, what: str = "url") -> Target:
    """Check the syntax of ``url`` (scheme, host, no credentials); no DNS.

    Raises:
        UnsafeURL: the URL is malformed, not http(s), or carries credentials.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"{what}: must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
        raise UnsafeURL(f"{what}: whitespace, control characters or backslashes in URL")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        # httpx refuses some numeric hosts (0177.0.0.1) that C resolvers accept: name them
        host = (urlsplit(url).hostname or "") if url.isascii() else ""
        literal = _ip_literal(host) if _NUMERIC_HOST.match(host) else None
        if literal is not None:
            raise UnsafeURL(f"{what}: numeric host {host!r} means {literal}; not allowed") from None
        raise UnsafeURL(f"{what}: malformed URL") from None
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURL(f"{what}: only http and https URLs are allowed")
    if parsed.userinfo:
        raise UnsafeURL(f"{what}: credentials in the URL are not allowed")
    raw = parsed.raw_host.decode("ascii", "replace").lower().rstrip(".")
    if not raw:
        raise UnsafeURL(f"{what}: URL has no host")
    literal = _ip_literal(raw)
    if literal is None and not _HOSTNAME.match(raw):
        raise UnsafeURL(f"{what}: invalid host name")
    host = str(literal) if literal is not None else raw
    port = parsed.port or DEFAULT_PORTS[scheme]
    return Target(url=parsed, scheme=scheme, host=host, port=port, literal=literal)


def check_url_syntax(url: str, *, what: str = "url") -> str:
    """:func:`parse_url` for validators: returns ``url`` unchanged when acceptable."""
    parse_url(url, what=what)
    return url


def check_literal_url(url: str, *, allow_hosts: Iterable[str] = (), what: str = "url") -> Target:
    """What can be decided about ``url`` without DNS: its syntax and, for an IP literal, its
    address (the rules of :meth:`SafeFetcher.check`). Admission runs this so an unsafe
    literal is refused before anything is written; a host name is checked at fetch time.

    Raises:
        UnsafeURL: bad syntax, a cloud-metadata literal, or a non-public literal that is not
            on the allow-list.
    """
    target = parse_url(url, what=what)
    if target.literal is not None:
        _refuse_unsafe(target.literal, target.host, host_allowed(target.host, allow_hosts), what)
    return target


def is_public_ip(ip: IPAddress) -> bool:
    """True when ``ip`` (and any IPv4 carried inside an IPv6 address) is publicly routable."""
    for candidate in (ip, *_embedded_ipv4s(ip)):
        if candidate in _METADATA or not candidate.is_global:
            return False
        if any(candidate in net for net in _BLOCKED_NETWORKS):
            return False
    return True


def host_allowed(host: str, allow_hosts: Iterable[str]) -> bool:
    """Whether ``host`` is on the allow-list: exact names or IPs, or ``.suffix`` entries."""
    host = host.lower().rstrip(".")
    for entry in allow_hosts:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry.startswith("."):
            if host.endswith(entry):
                return True
        elif host == entry or host == entry.strip("[]"):
            return True
    return False


async def system_resolver(host: str, port: int) -> list[str]:
    """``getaddrinfo`` in the loop's thread pool (never blocks the event loop)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class SafeFetcher:
    """Fetches user URLs through the checks above with its own proxy-free HTTP client."""

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        allow_hosts: Iterable[str] = (),
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.resolver: Resolver = resolver or system_resolver
        self.allow_hosts = tuple(allow_hosts)
        self._client = client
        self._own_client = client is None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # no keep-alive: connections are pooled by IP, and a TLS connection verified
            # for one host name must never carry a request for another on the same IP
            self._client = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                timeout=httpx.Timeout(DEFAULT_TIMEOUT_S),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = None

    async def check(
        self, url: str, *, allow_hosts: Iterable[str] | None = None, what: str = "url"
    ) -> tuple[Target, str]:
        """Parse, resolve once and validate; returns the target and the IP to connect to.

        Raises:
            UnsafeURL: bad syntax, a non-public address, or a host that does not resolve.
        """
        target = parse_url(url, what=what)
        allowed = host_allowed(
            target.host, self.allow_hosts if allow_hosts is None else allow_hosts
        )
        if target.literal is not None:
            addresses: list[IPAddress] = [target.literal]
        else:
            try:
                resolved = await self.resolver(target.host, target.port)
            except (OSError, UnicodeError) as exc:
                raise UnsafeURL(
                    f"{what}: host {target.host!r} does not resolve ({exc})",
                    code="unresolvable_host",
                ) from None
            addresses = []
            for text in resolved:
                try:
                    addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
                except ValueError:
                    raise UnsafeURL(f"{what}: {target.host!r} resolved to {text!r}") from None
            if not addresses:
                raise UnsafeURL(
                    f"{what}: host {target.host!r} does not resolve", code="unresolvable_host"
                )
        for ip in addresses:
            _refuse_unsafe(ip, target.host, allowed, what)
        return target, str(addresses[0])

    async def fetch(
        self,
        url: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        allow_hosts: Iterable[str] | None = None,
        headers: dict[str, str] | None = None,
        what: str = "url",
    ) -> FetchResult:
        """GET ``url`` following at most 10 re-validated redirects; 2xx bodies only.

        Raises:
            UnsafeURL: any hop is not acceptable.
            FetchFailed: network error, timeout, non-2xx status, body over ``max_bytes``.
        """
        try:
            async with asyncio.timeout(timeout_s):
                return await self._fetch(url, max_bytes, allow_hosts, headers or {}, what)
        except TimeoutError:
            raise FetchFailed(
                f"{what}: no complete answer within {timeout_s:g} s", code="fetch_timeout"
            ) from None

    async def send(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        allow_hosts: Iterable[str] | None = None,
        max_bytes: int = READ_CHUNK,
        what: str = "url",
    ) -> FetchResult:
        """One request with no redirect followed (webhooks): any status is returned.

        Raises:
            UnsafeURL: the URL is not acceptable.
            FetchFailed: network error or timeout.
        """
        try:
            async with asyncio.timeout(timeout_s):
                target, ip = await self.check(url, allow_hosts=allow_hosts, what=what)
                status, response_headers, body = await self._request(
                    method, target, ip, headers or {}, content, max_bytes, truncate=True
                )
        except TimeoutError:
            raise FetchFailed(
                f"{what}: no answer within {timeout_s:g} s", code="fetch_timeout"
            ) from None
        return FetchResult(str(target.url), status, response_headers, body)

    async def _fetch(
        self,
        url: str,
        max_bytes: int,
        allow_hosts: Iterable[str] | None,
        headers: dict[str, str],
        what: str,
    ) -> FetchResult:
        current = url
        first_origin: tuple[str, str, int] | None = None
        for _ in range(MAX_REDIRECTS + 1):
            target, ip = await self.check(current, allow_hosts=allow_hosts, what=what)
            if first_origin is None:
                first_origin = target.origin
            elif target.origin != first_origin:
                headers = {k: v for k, v in headers.items() if k.lower() not in SENSITIVE_HEADERS}
            status, response_headers, body = await self._request(
                "GET", target, ip, headers, b"", max_bytes, truncate=False
            )
            if status in REDIRECT_STATUSES:
                location = response_headers.get("location")
                if not location:
                    raise FetchFailed(f"{what}: redirect ({status}) without a Location")
                current = str(target.url.join(location))
                continue
            if not 200 <= status < 300:
                raise FetchFailed(f"{what}: the server answered HTTP {status}", code="fetch_status")
            return FetchResult(str(target.url), status, response_headers, body)
        raise FetchFailed(f"{what}: more than {MAX_REDIRECTS} redirects", code="too_many_redirects")

    async def _request(
        self,
        method: str,
        target: Target,
        ip: str,
        headers: dict[str, str],
        content: bytes,
        max_bytes: int,
        *,
        truncate: bool,
    ) -> tuple[int, httpx.Headers, bytes]:
        pinned = target.url.copy_with(host=ip, port=target.port)
        send_headers = {
            **headers,
            "Host": target.host_header(),
            "Accept-Encoding": ACCEPT_ENCODING,
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = self.client.build_request(
            method, pinned, headers=send_headers, content=content or None, extensions=extensions
        )
        try:
            response = await self.client.send(request, follow_redirects=False, stream=True)
        except httpx.HTTPError as exc:
            raise FetchFailed(
                f"{target.host}: request failed ({type(exc).__name__})", code="fetch_failed"
            ) from None
        try:
            if response.status_code in REDIRECT_STATUSES or not 200 <= response.status_code < 300:
                # only a small bounded part of an error or redirect body is ever read
                body = await _read_capped(response, min(max_bytes, READ_CHUNK), truncate=True)
            else:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes and not truncate:
                    raise FetchFailed(
                        f"{target.host}: body of {declared} bytes is over the limit of {max_bytes}",
                        code="fetch_too_large",
                    )
                body = await _read_capped(response, max_bytes, truncate=truncate)
        except httpx.HTTPError as exc:
            raise FetchFailed(
                f"{target.host}: reading the body failed ({type(exc).__name__})"
            ) from None
        finally:
            await response.aclose()
        return response.status_code, response.headers, body


async def _read_capped(response: httpx.Response, max_bytes: int, *, truncate: bool) -> bytes:
    """The decoded body, at most ``max_bytes`` (``FetchFailed`` past it unless truncating)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise FetchFailed(f"unsupported content encoding {encoding!r}", code="fetch_encoding")
    if response.is_stream_consumed:  # a transport that read the body already (tests)
        body = response.content
        if len(body) > max_bytes and not truncate:
            raise FetchFailed(
                f"body is over the limit of {max_bytes} bytes", code="fetch_too_large"
            )
        return body[:max_bytes]
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if "gzip" in encoding else None
    chunks: list[bytes] = []
    total = 0
    async for raw in response.aiter_raw(READ_CHUNK):
        pending = raw
        while pending:
            if inflate is not None:
                try:
                    # bounded output: a gzip bomb cannot expand past the cap in one step
                    piece = inflate.decompress(pending, max_bytes - total + 1)
                except zlib.error:
                    raise FetchFailed("corrupt gzip body", code="fetch_encoding") from None
                pending = inflate.unconsumed_tail
            else:
                piece, pending = pending, b""
            total += len(piece)
            if total > max_bytes:
                if truncate:
                    chunks.append(piece[: len(piece) - (total - max_bytes)])
                    return b"".join(chunks)
                raise FetchFailed(
                    f"body is over the limit of {max_bytes} bytes", code="fetch_too_large"
                )
            chunks.append(piece)
            if inflate is not None and not piece and pending:
                break
    return b"".join(chunks)


def _refuse_unsafe(ip: IPAddress, host: str, allowed: bool, what: str) -> None:
    if ip in _METADATA or any(e in _METADATA for e in _embedded_ipv4s(ip)):
        raise UnsafeURL(f"{what}: {host!r} is a cloud metadata address")
    if not allowed and not is_public_ip(ip):
        raise UnsafeURL(
            f"{what}: {host!r} resolves to a non-public address ({ip}); "
            "only public hosts, or hosts on the allow-list, may be used"
        )


def _ip_literal(host: str) -> IPAddress | None:
    text = host.strip("[]")
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise UnsafeURL(f"invalid IPv6 address {text!r}") from None
    if _NUMERIC_HOST.match(text):
        # the C resolver reads 2130706433, 0177.0.0.1 and 0x7f.1 as 127.0.0.1: so do we
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            raise UnsafeURL(f"invalid IPv4 address {text!r}") from None
    return None


def _embedded_ipv4s(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 destinations an IPv6 address may carry: mapped, translated, compatible, 6to4,
    NAT64 (``64:ff9b::/96``; ``64:ff9b:1::/48`` is refused whole) and Teredo."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64 or ip in _TRANSLATED or (int(ip) >> 32 == 0 and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found
