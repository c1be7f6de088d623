"""The client's retry rules, at the network edge (``httpx.MockTransport``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from pixelgate.client import Client, ConnectionFailed, RateLimitError, ServerError
from pixelgate.client._base import RetryPolicy, retry_after

GENERATION = {
    "id": "gen_1",
    "status": "SUCCEEDED",
    "created_at": "2026-01-01T00:00:00Z",
    "images": [],
}


def _client(responses: list[httpx.Response], seen: list[httpx.Request], **kw: object) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses.pop(0)

    http = httpx.Client(base_url="http://pixelgate.test", transport=httpx.MockTransport(handler))
    return Client("http://pixelgate.test", http_client=http, **kw)  # type: ignore[arg-type]


def _error(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": code, "request_id": "req_x"}}
    return httpx.Response(status, json=body, headers=headers)


def test_503_is_retried_after_retry_after_with_the_same_idempotency_key() -> None:
    seen: list[httpx.Request] = []
    client = _client(
        [_error(503, "unavailable", **{"Retry-After": "1"}), httpx.Response(200, json=GENERATION)],
        seen,
    )
    started = time.monotonic()
    handle = client.submit("x")
    assert handle.id == "gen_1" and time.monotonic() - started >= 1.0
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 2 and len(keys) == 1


def test_a_retry_after_longer_than_the_cap_is_raised_at_once() -> None:
    seen: list[httpx.Request] = []
    client = _client([_error(429, "rate_limited", **{"Retry-After": "3600"})], seen)
    with pytest.raises(RateLimitError) as info:
        client.account()
    assert info.value.retry_after == 3600 and info.value.request_id == "req_x"
    assert len(seen) == 1


def test_retries_run_out() -> None:
    seen: list[httpx.Request] = []
    client = _client([_error(503, "busy", **{"Retry-After": "0"})] * 3, seen, max_retries=2)
    with pytest.raises(ServerError) as info:
        client.account()
    assert info.value.status == 503 and len(seen) == 3


def test_other_errors_are_not_retried() -> None:
    seen: list[httpx.Request] = []
    client = _client([_error(500, "internal_error")], seen)
    with pytest.raises(ServerError):
        client.account()
    assert len(seen) == 1


def test_retry_after_as_an_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after({"retry-after": format_datetime(when, usegmt=True)})
    assert seconds is not None and 28 <= seconds <= 30
    assert retry_after({"retry-after": "soon"}) is None
    response = httpx.Response(429)
    assert RetryPolicy(max_retries=1).delay(response, 0) is not None  # backoff without header
    assert RetryPolicy(max_retries=1).delay(response, 1) is None


def test_no_server_is_connection_failed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    http = httpx.Client(base_url="http://pixelgate.test", transport=httpx.MockTransport(refuse))
    with pytest.raises(ConnectionFailed):
        Client("http://pixelgate.test", http_client=http).account()
