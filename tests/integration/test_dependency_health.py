"""``/health`` and start-up say in one line why a dependency is down (S3, PostgreSQL, Redis)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from pixelgate.api.app import create_app
from pixelgate.config import Settings
from pixelgate.errors import DependencyDown
from pixelgate.probes import Dependency, explain
from pixelgate.runtime import Runtime
from tests.scaleout.services import S3Server, moto_s3

S3_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>'
    b"<Message>The AWS Access Key Id you provided does not exist in our records.</Message>"
    b"</Error>"
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_s3() as server:
        yield server


@pytest.fixture
def denying_s3() -> Iterator[str]:
    """An S3 endpoint that refuses every request's credentials (403 InvalidAccessKeyId)."""

    class Handler(BaseHTTPRequestHandler):
        def _deny(self) -> None:
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(S3_DENIED)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(S3_DENIED)

        do_GET = do_HEAD = do_PUT = _deny

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def _health(settings: Settings) -> dict[str, Any]:
    runtime = await Runtime.open(settings)
    try:
        app = create_app(settings, runtime=runtime, run_worker=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/health")
        body: dict[str, Any] = r.json()
        assert r.status_code == (200 if body["status"] == "healthy" else 503)
        return body
    finally:
        await runtime.close()


def _s3_settings(endpoint: str, bucket: str) -> dict[str, Any]:
    # no s3_allow_http: an endpoint written as http:// is allowed as it is
    return {
        "storage_url": f"s3://{bucket}/img",
        "storage_s3": {"endpoint_url": endpoint, "region": "us-east-1",
                       "access_key_id": "dev", "secret_access_key": "dev"},
    }


async def test_an_explicit_http_s3_endpoint_is_healthy(
    make_settings: Callable[..., Settings], s3: S3Server
) -> None:
    body = await _health(make_settings(**_s3_settings(s3.endpoint, s3.bucket)))
    assert body["checks"]["storage"] == {"status": "ok", "backend": "s3"}


async def test_a_missing_bucket_is_named(
    make_settings: Callable[..., Settings], s3: S3Server
) -> None:
    body = await _health(make_settings(**_s3_settings(s3.endpoint, "no-such-bucket")))
    reason = body["checks"]["storage"]["reason"]
    assert "s3://no-such-bucket/img" in reason and "does not exist" in reason
    assert "\n" not in reason


async def test_refused_s3_credentials_are_named(
    make_settings: Callable[..., Settings], denying_s3: str
) -> None:
    body = await _health(make_settings(**_s3_settings(denying_s3, "images")))
    reason = body["checks"]["storage"]["reason"]
    assert reason.startswith("credentials refused by s3://images/img")
    assert "AWS_" in reason


async def test_an_unreachable_s3_endpoint_is_named(make_settings: Callable[..., Settings]) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    body = await _health(make_settings(**_s3_settings(endpoint, "images")))
    reason = body["checks"]["storage"]["reason"]
    assert reason.startswith("cannot connect to") and endpoint in reason


async def test_an_unreachable_redis_is_named(make_settings: Callable[..., Settings]) -> None:
    port = _closed_port()
    body = await _health(make_settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    redis = body["checks"]["redis"]
    assert redis["status"] == "down"
    assert redis["reason"] == (
        f"cannot connect to Redis at 127.0.0.1:{port} (connection refused or host unreachable) "
        "(PIXELGATE_REDIS_URL)"
    )


async def test_an_unreachable_postgresql_stops_start_up_with_one_line(
    make_settings: Callable[..., Settings],
) -> None:
    port = _closed_port()
    settings = make_settings(database_url=f"postgresql+asyncpg://u:secret@127.0.0.1:{port}/db")
    with pytest.raises(DependencyDown) as down:
        await Runtime.open(settings)
    message = down.value.message
    assert message == (
        f"database down: cannot connect to PostgreSQL at 127.0.0.1:{port} "
        "(connection refused or host unreachable) (PIXELGATE_DATABASE_URL)"
    )
    assert "secret" not in message


async def test_a_missing_postgresql_database_is_named(
    make_settings: Callable[..., Settings],
) -> None:
    from tests.scaleout.services import PG_HOST, PG_PORT, PG_USER, require_postgres

    require_postgres()
    settings = make_settings(
        database_url=f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/pixelgate_no_such_db"
    )
    with pytest.raises(DependencyDown) as down:
        await Runtime.open(settings)
    assert "database 'pixelgate_no_such_db' does not exist" in down.value.message


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Exception('password authentication failed for user "pg"'), "credentials refused by"),
        (Exception("WRONGPASS invalid username-password pair"), "credentials refused by"),
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve the host of"),
        (ConnectionRefusedError(111, "Connect call failed"), "cannot connect to"),
        (TimeoutError(), "no answer from"),
        (RuntimeError("something odd\nwith a trace"), "X: something odd"),
    ],
)
def test_explain_says_why_in_one_line(error: Exception, expected: str) -> None:
    async def never() -> dict[str, Any]:
        raise AssertionError

    line = explain(error, Dependency("database", "X", "PIXELGATE_DATABASE_URL", never))
    assert line.startswith(expected)
    assert line.endswith("(PIXELGATE_DATABASE_URL)")
    assert "\n" not in line
