"""Fakes shared by the tests: real implementations of our protocols, no mocks."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
from PIL import Image

from pixelgate.providers.base import JobContext, ModelInfo, ProviderRequest, ProviderResult
from pixelgate.providers.placeholder import (
    CAPABILITIES,
    MODEL,
    PlaceholderProvider,
    PlaceholderSettings,
)


@dataclass
class FakeJobContext:
    """A JobContext that records what the adapter reported."""

    http: httpx.AsyncClient
    provider_job_id: str | None = None
    saved_jobs: list[str] = field(default_factory=list)
    progress_reports: list[tuple[int, str | None]] = field(default_factory=list)
    partials: list[tuple[int, bytes, str]] = field(default_factory=list)
    #: called with each preview's index as it arrives
    on_partial: Callable[[int], None] | None = None

    async def save_provider_job(self, job_id: str) -> None:
        self.saved_jobs.append(job_id)
        self.provider_job_id = job_id

    async def progress(self, percent: int, message: str | None = None) -> None:
        self.progress_reports.append((percent, message))

    async def partial_image(self, index: int, data: bytes, output_format: str) -> None:
        self.partials.append((index, data, output_format))
        if self.on_partial is not None:
            self.on_partial(index)


# A real HTTP server on loopback (webhook receivers, image hosts) -------------------

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LoopbackServer:
    """A threaded HTTP server on ``host`` (127.0.0.1) answering through ``routes[path]``.

    Each route is ``callable(Received) -> (status, headers, body)``; every request is
    recorded in ``received``. Use as a context manager. Another loopback address
    (``127.0.0.2``) makes a second host for tests of cross-host rules.
    """

    def __init__(
        self,
        routes: dict[str, Callable[[Received], Reply]] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.routes: dict[str, Callable[[Received], Reply]] = dict(routes or {})
        self.received: list[Received] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                item = Received(self.command, self.path, dict(self.headers.items()), body)
                server.received.append(item)
                route = server.routes.get(self.path.split("?", 1)[0])
                status, headers, payload = route(item) if route else (404, {}, b"not found")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = self._httpd.server_address[1]
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# A provider that records what it was asked ----------------------------------------


class CapturingSettings(PlaceholderSettings):
    """``kind = "capture"``: a placeholder whose edit/reference support can be switched."""

    kind: str = "capture"
    edit: bool = True
    reference: bool = True


class CapturingProvider(PlaceholderProvider):
    """Records every ProviderRequest (``CapturingProvider.requests[name]``), then draws."""

    kind = "capture"
    settings_class = CapturingSettings
    requests: ClassVar[dict[str, list[ProviderRequest]]] = {}

    @property
    def models(self) -> dict[str, ModelInfo]:
        settings = self.settings
        edit = getattr(settings, "edit", True)
        reference = getattr(settings, "reference", True)
        caps = replace(CAPABILITIES, edit=edit, mask=edit, reference_image=reference)
        return {MODEL: ModelInfo(name=MODEL, capabilities=caps)}

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        CapturingProvider.requests.setdefault(self.name, []).append(request)
        return await super().generate(request, ctx)


def register_capturing_provider(monkeypatch: Any) -> None:
    """Make ``kind = "capture"`` available to the registry for one test."""
    from pixelgate.providers import registry

    monkeypatch.setitem(registry.BUILTIN_KINDS, "capture", "tests.fakes:CapturingProvider")
    CapturingProvider.requests.clear()


def png_bytes(width: int = 32, height: int = 24, color: tuple[int, ...] = (200, 30, 30)) -> bytes:
    """A small PNG (RGBA when ``color`` has four values)."""
    mode = "RGBA" if len(color) == 4 else "RGB"
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


# A provider that plays a script (routing chaos tests) -------------------------------


class ScriptedSettings(PlaceholderSettings):
    """``kind = "scripted"``: each call plays the next step of ``script`` (the last repeats).

    Steps: ``ok`` or ``ok:SECONDS`` (answer after a delay), ``transient``, ``timeout``,
    ``refused``, ``invalid``, ``auth``, ``rate_limited:RETRY_AFTER``, ``hang``, ``gate``
    (answer once the test opens ``ScriptedProvider.gate(name)``).
    """

    kind: str = "scripted"
    script: list[str] = ["ok"]
    saves_job: bool = True
    #: "unknown": ``price`` raises PriceUnknown; "broken": it raises a plain bug
    pricing: str = "table"


@dataclass
class ScriptLog:
    """What happened to one scripted instance."""

    calls: int = 0
    started: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: list[str] = field(default_factory=list)


class ScriptedProvider(PlaceholderProvider):
    """Plays its script; ``ScriptedProvider.logs[name]`` records calls, overlap, cancels."""

    kind = "scripted"
    settings_class = ScriptedSettings
    logs: ClassVar[dict[str, ScriptLog]] = {}
    gates: ClassVar[dict[str, Any]] = {}

    @classmethod
    def gate(cls, name: str) -> Any:
        """The ``asyncio.Event`` that the ``gate`` steps of instance ``name`` wait for."""
        import asyncio

        return cls.gates.setdefault(name, asyncio.Event())

    def price(self, request: ProviderRequest) -> Decimal:
        from pixelgate.errors import PriceUnknown

        pricing = getattr(self.settings, "pricing", "table")
        if pricing == "unknown":
            raise PriceUnknown(f"{self.name}: no price for {request.model}")
        if pricing == "broken":
            raise RuntimeError("a defect in the price table")
        return super().price(request)

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        import asyncio

        from pixelgate import errors

        log = ScriptedProvider.logs.setdefault(self.name, ScriptLog())
        script: list[str] = getattr(self.settings, "script", ["ok"])
        step = script[min(log.calls, len(script) - 1)]
        log.calls += 1
        log.started.append(asyncio.get_running_loop().time())
        log.in_flight += 1
        log.max_in_flight = max(log.max_in_flight, log.in_flight)
        try:
            if getattr(self.settings, "saves_job", True):
                await ctx.save_provider_job(f"{self.name}-job-{log.calls}")
            kind, _, arg = step.partition(":")
            message = f"{self.name}: scripted {kind}"
            if kind == "ok":
                await asyncio.sleep(float(arg or 0))
                return await super().generate(request, ctx)
            if kind == "hang":
                await asyncio.sleep(3600)
            if kind == "gate":
                await ScriptedProvider.gate(self.name).wait()
                return await super().generate(request, ctx)
            if kind == "rate_limited":
                raise errors.ProviderRateLimited(
                    message, provider=self.name, retry_after=float(arg or 1), status_code=429
                )
            failures: dict[str, type[errors.ProviderError]] = {
                "transient": errors.Transient,
                "timeout": errors.ProviderTimeout,
                "refused": errors.Refused,
                "invalid": errors.InvalidRequest,
                "auth": errors.ProviderAuthError,
            }
            raise failures[kind](message, provider=self.name)
        finally:
            log.in_flight -= 1

    async def cancel(self, provider_job_id: str) -> None:
        ScriptedProvider.logs.setdefault(self.name, ScriptLog()).cancelled.append(provider_job_id)


def register_scripted_provider(monkeypatch: Any) -> dict[str, ScriptLog]:
    """Make ``kind = "scripted"`` available to the registry for one test; returns the logs."""
    from pixelgate.providers import registry

    monkeypatch.setitem(registry.BUILTIN_KINDS, "scripted", "tests.fakes:ScriptedProvider")
    ScriptedProvider.logs.clear()
    ScriptedProvider.gates.clear()
    return ScriptedProvider.logs


class ManualClock:
    """A ``Clock`` (``now``/``sleep``) that only the test moves: ``await advance(s)``.

    ``sleep(d)`` returns once the clock has been advanced past its deadline; ``advance``
    wakes each due sleeper in deadline order and lets it run until it sleeps again or
    ends, so a ticker's work happens inside ``advance``, not after some wall time.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, int, Any]] = []
        self._count = 0

    def now(self) -> float:
        return self.t

    async def sleep(self, delay: float) -> None:
        import asyncio

        future = asyncio.get_running_loop().create_future()
        self._count += 1
        self._sleepers.append((self.t + max(0.0, delay), self._count, future))
        await future

    @property
    def sleepers(self) -> int:
        return sum(1 for *_, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        target = self.t + seconds
        while True:
            await self._settle()
            due = sorted(s for s in self._sleepers if s[0] <= target and not s[2].done())
            if not due:
                break
            deadline, _, future = due[0]
            self._sleepers.remove(due[0])
            self.t = max(self.t, deadline)
            future.set_result(None)
        self.t = target
        await self._settle()

    async def _settle(self) -> None:
        """Let woken tasks run until they wait again (a few loop turns suffice here)."""
        import asyncio

        for _ in range(20):
            await asyncio.sleep(0)
