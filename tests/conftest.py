"""Shared fixtures: settings on a temp dir, an opened runtime, the app, clients, accounts.

``--backend scaleout`` (or ``PIXELGATE_TEST_BACKEND=scaleout``) points the same fixtures
at PostgreSQL + Redis + S3 (moto) instead of SQLite + memory + local disk; see
``tests/scaleout``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from pixelgate.api.app import create_app
from pixelgate.config import Settings, load_settings
from pixelgate.core.pipeline import Caller
from pixelgate.runtime import Runtime

ADMIN_KEY = "pg_test_admin_key_0123456789abcdef"

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is None or not ip.is_loopback:
            raise ConnectionRefusedError(f"tests may not reach {host!r}: loopback only")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nothing calls the internet: sockets may only connect to loopback."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    yield


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("PIXELGATE_") or name in (
            "OPENAI_API_KEY",
            "GEMINI_API_KEY",
            "STABILITY_API_KEY",
            "REPLICATE_API_TOKEN",
            "FAL_KEY",
            "IDEOGRAM_API_KEY",
            "UNSPLASH_ACCESS_KEY",
            "AZURE_OPENAI_API_KEY",
            "OPENROUTER_API_KEY",
            "XAI_API_KEY",
            "RECRAFT_API_TOKEN",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_CLOUD_PROJECT",
            "BFL_API_KEY",
        ) or name.startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    # a developer's own cloud credentials never reach the vertex/bedrock tests
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "CLOUDSDK_CONFIG"):
        monkeypatch.setenv(name, "/nonexistent/pixelgate-test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_GCE_CHECK", "true")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=("sqlite", "scaleout"),
        default=os.environ.get("PIXELGATE_TEST_BACKEND", "sqlite"),
        help="sqlite (default) or scaleout: PostgreSQL + Redis + S3 (moto) for the shared fixtures",
    )


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--backend"))


@pytest.fixture
def sqlite_only(backend: str) -> None:
    """For tests about the embedded deployment's SQLite itself (its statements, commits
    and query plans): skipped, with this reason, under ``--backend scaleout``."""
    if backend != "sqlite":
        pytest.skip("about the embedded deployment's SQLite (statements, commits, query plans)")


@pytest.fixture(scope="session")
def scaleout_services(backend: str) -> Iterator[Any]:
    """A fresh PostgreSQL database, Redis and a moto S3 server (scaleout backend only)."""
    if backend != "scaleout":
        yield None
        return
    from types import SimpleNamespace

    from tests.scaleout.services import REDIS_URL, fresh_database, moto_s3, require_redis

    require_redis()
    with fresh_database() as db, moto_s3() as s3:
        yield SimpleNamespace(
            db=db, s3=s3, redis_url=REDIS_URL, prefix=f"pgtest-{secrets.token_hex(4)}"
        )


@pytest.fixture
def backend_overrides(backend: str, scaleout_services: Any) -> Iterator[dict[str, Any]]:
    """Settings for the chosen backend; on scaleout, an emptied database per test and a
    Redis prefix of its own (breakers, pauses and windows never leak into the next test),
    whose keys are deleted after it."""
    if scaleout_services is None:
        yield {}
        return
    scaleout_services.db.wipe()
    prefix = f"{scaleout_services.prefix}-{secrets.token_hex(4)}"
    yield {
        "database_url": scaleout_services.db.sqlalchemy_url,
        "redis_url": scaleout_services.redis_url,
        "redis_prefix": prefix,
        # image URLs stay /files/{key} (a 307 to a presigned URL) so the suite's URL checks hold
        "s3_url_mode": "gateway",
        **scaleout_services.s3.settings(f"t{secrets.token_hex(4)}"),
    }
    import redis

    client = redis.Redis.from_url(scaleout_services.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def make_settings(tmp_path: Path, backend_overrides: dict[str, Any]) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "admin_key": ADMIN_KEY,
            "lease_seconds": 5.0,
            "poll_interval_s": 0.2,
            "shutdown_grace_s": 5.0,
            "sync_timeout_s": 10.0,
        }
        base.update(backend_overrides)
        base.update(overrides)
        return load_settings(**base)

    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        providers={
            "fast": {"kind": "placeholder"},
            "slow": {"kind": "placeholder", "latency_ms": 1500},
            "flaky": {"kind": "placeholder", "fail_rate": 1.0},
            "refusing": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "refused"},
        },
        routing={"default": ["fast"]},
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = await Runtime.open(settings)
    await rt.start_worker()
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def app(settings: Settings, runtime: Runtime) -> Any:
    return create_app(settings, runtime=runtime, run_worker=False)


def redirect_options(scaleout_services: Any) -> dict[str, Any]:
    """Options of an ASGI test client: on scaleout /files answers 307 to the S3 server, so
    follow it there over the real (loopback) network."""
    if scaleout_services is None:
        return {}
    return {
        "mounts": {scaleout_services.s3.endpoint: httpx.AsyncHTTPTransport()},
        "follow_redirects": True,
    }


@pytest.fixture
async def client(app: Any, scaleout_services: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    extra = redirect_options(scaleout_services)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        **extra,
    ) as c:
        yield c


@pytest.fixture
def gateway(
    make_settings: Callable[..., Settings],
) -> Callable[..., Any]:
    """Open a runtime with its worker and an admin client: ``async with gateway(...)``."""

    @asynccontextmanager
    async def factory(
        settings: Settings | None = None, **overrides: Any
    ) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
        settings = settings or make_settings(**overrides)
        runtime = await Runtime.open(settings)
        await runtime.start_worker()
        app = create_app(settings, runtime=runtime, run_worker=False)
        try:
            async with admin_client(app) as client:
                yield runtime, client
        finally:
            await runtime.close()

    return factory


def admin_client(app: Any) -> httpx.AsyncClient:
    """An in-process client of ``app`` with the admin key (used as ``async with``)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )


async def wait_status(client: httpx.AsyncClient, gen_id: str, status: str) -> dict[str, Any]:
    """Poll ``GET /v1/generations/{gen_id}`` until it shows ``status`` (10 s at most)."""
    for _ in range(200):
        body: dict[str, Any] = (await client.get(f"/v1/generations/{gen_id}")).json()
        if body["status"] == status:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{gen_id} never reached {status}: {body}")


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def make_account(runtime: Runtime) -> Callable[..., Any]:
    """Create an account with a key; returns ``(Caller, headers)``."""

    async def factory(
        name: str, *, credits: int | None = None, tier: str = "PRO"
    ) -> tuple[Caller, dict[str, str]]:
        account = await runtime.store.create_account(name, tier=tier, credits=credits)
        _, plain = await runtime.store.create_key(account.id)
        caller = Caller(account_id=account.id, account_name=account.name)
        return caller, {"Authorization": f"Bearer {plain}"}

    return factory
