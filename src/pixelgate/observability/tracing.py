"""OpenTelemetry spans, optional: ``pip install 'pixelgate[otel]'``, off by default.

Turned on by the standard variables: ``OTEL_TRACES_EXPORTER`` (``console``, ``otlp``
with ``opentelemetry-exporter-otlp`` installed, or any exporter registered under the
``opentelemetry_traces_exporter`` entry point) unless ``OTEL_SDK_DISABLED=true``;
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` name the process, the exporter
reads its own ``OTEL_EXPORTER_*``. Spans: the HTTP request, admission, the queue hand-off
(a W3C ``traceparent`` stored with the job), the worker's run of the job, each provider
attempt and storage.

While tracing is off every function here is a test of one global and a return: no
import of OpenTelemetry, no allocation on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import structlog

from pixelgate.config import otel_settings

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "TRACEPARENT_KEY",
    "attempt_span",
    "configure_tracing",
    "enabled",
    "inject",
    "install",
    "job_span",
    "request_span",
    "span",
    "uninstall",
]

log = structlog.get_logger("pixelgate.tracing")

#: where a job's trace context travels with it (a private key of the stored request,
#: never shown by the API: keys starting with ``__`` are hidden)
TRACEPARENT_KEY = "__traceparent"
TRACER_NAME = "pixelgate"

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    """True while spans are recorded."""
    return _tracer is not None


def configure_tracing() -> bool:
    """Turn tracing on from the ``OTEL_*`` variables (once per process); True if on."""
    global _tracer, _provider
    if _tracer is not None:
        return True
    wanted = otel_settings()
    if wanted is None:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing_unavailable", reason="pip install 'pixelgate[otel]'")
        return False
    provider = SdkProvider(resource=Resource.create())
    for name in wanted:
        exporter = _exporter(name)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    log.info("tracing_enabled", exporters=wanted)
    return True


def install(provider: TracerProvider) -> None:
    """Record spans through ``provider`` (tests pass one with an in-memory exporter)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME)


def uninstall() -> None:
    """Stop recording spans (flushing what the provider holds)."""
    global _tracer, _provider
    if _provider is not None and hasattr(_provider, "shutdown"):
        _provider.shutdown()
    _tracer = _provider = None


def _exporter(name: str) -> Any:
    from importlib.metadata import entry_points

    for point in entry_points(group="opentelemetry_traces_exporter", name=name):
        return point.load()()
    log.warning("tracing_exporter_unknown", exporter=name)
    return None


# Spans -----------------------------------------------------------------------------


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span | None]:
    """A child of the current span (nothing while tracing is off)."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


@contextmanager
def request_span(method: str, route: str, headers: Any) -> Iterator[Span | None]:
    """The server span of one HTTP request, continuing an incoming ``traceparent``."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
    with _tracer.start_as_current_span(
        f"{method} {route}",
        context=extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
    ) as current:
        yield current


def inject(payload: dict[str, Any]) -> None:
    """Store the current trace context in a job's request (the queue hand-off)."""
    if _tracer is None:
        return
    from opentelemetry.propagate import inject as otel_inject
    from opentelemetry.trace import SpanKind

    carrier: dict[str, str] = {}
    with _tracer.start_as_current_span("generation.enqueue", kind=SpanKind.PRODUCER):
        otel_inject(carrier)
    if "traceparent" in carrier:
        payload[TRACEPARENT_KEY] = carrier["traceparent"]


@contextmanager
def job_span(generation_id: str, request: dict[str, Any]) -> Iterator[Span | None]:
    """The worker's run of one job, a child of the span that admitted it.

    Takes the trace context out of ``request`` (so validation never sees it), whether or
    not tracing is on here.
    """
    traceparent = request.pop(TRACEPARENT_KEY, None)
    if _tracer is None:
        yield None
        return
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    parent = extract({"traceparent": traceparent}) if isinstance(traceparent, str) else None
    with _tracer.start_as_current_span(
        "generation.run",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={"pixelgate.generation_id": generation_id},
    ) as current:
        yield current


def attempt_span(
    provider: str,
    model: str | None,
    started: float,
    ended: float,
    error: str | None,
    attempt: int,
) -> None:
    """One provider attempt, recorded after it ended (``started``/``ended``: monotonic s)."""
    if _tracer is None:
        return
    import time

    from opentelemetry.trace import SpanKind, Status, StatusCode

    offset = time.time_ns() - time.monotonic_ns()
    current = _tracer.start_span(
        "provider.attempt",
        kind=SpanKind.CLIENT,
        start_time=int(started * 1e9) + offset,
        attributes=_clean(
            {
                "pixelgate.provider": provider,
                "pixelgate.model": model,
                "pixelgate.attempt": attempt,
                "error.type": error,
            }
        ),
    )
    if error is not None:
        current.set_status(Status(StatusCode.ERROR, error))
    current.end(end_time=int(ended * 1e9) + offset)


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}
