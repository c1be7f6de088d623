"""OpenTelemetry spans, recorded with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pixelgate.config import otel_settings
from pixelgate.observability import tracing

WAIT = {"Prefer": "wait=10"}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()


async def test_one_trace_from_request_to_provider_and_storage(
    spans: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    answer = await client.post(
        "/v1/generations",
        json={"prompt": "a cat"},
        headers={**WAIT, "traceparent": TRACEPARENT},
    )
    assert answer.json()["status"] == "SUCCEEDED"
    assert "__traceparent" not in answer.json()["request"]
    finished = {s.name: s for s in spans.get_finished_spans()}
    for name in (
        "POST /v1/generations",
        "generation.admit",
        "generation.enqueue",
        "generation.run",
        "provider.attempt",
        "storage.put",
    ):
        assert name in finished, sorted(finished)
    trace_ids = {s.context.trace_id for s in finished.values()}
    assert trace_ids == {int("0af7651916cd43dd8448eb211c80319c", 16)}  # the caller's trace

    def parent(name: str) -> int | None:
        span = finished[name]
        return span.parent.span_id if span.parent is not None else None

    assert parent("generation.admit") == finished["POST /v1/generations"].context.span_id
    assert parent("generation.enqueue") == finished["generation.admit"].context.span_id
    assert parent("generation.run") == finished["generation.enqueue"].context.span_id
    assert parent("provider.attempt") == finished["generation.run"].context.span_id
    attempt = finished["provider.attempt"]
    assert attempt.attributes is not None and attempt.attributes["pixelgate.provider"] == "fast"
    assert finished["POST /v1/generations"].attributes["http.route"] == "/v1/generations"


async def test_failed_attempts_are_error_spans(
    spans: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    await client.post("/v1/generations", json={"prompt": "x", "provider": "refusing"}, headers=WAIT)
    attempts = [s for s in spans.get_finished_spans() if s.name == "provider.attempt"]
    assert attempts and all(not s.status.is_ok for s in attempts)
    assert attempts[0].attributes is not None
    assert attempts[0].attributes["error.type"]


async def test_off_by_default_records_nothing_and_stores_no_context(
    client: httpx.AsyncClient,
) -> None:
    assert not tracing.enabled()
    payload: dict[str, object] = {}
    tracing.inject(payload)
    assert payload == {}
    with tracing.span("anything") as span:
        assert span is None


def test_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert otel_settings() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert otel_settings() == ["console"]
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert otel_settings() is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert otel_settings() is None
