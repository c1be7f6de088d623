"""Real servers for the scale-out tests: a fresh PostgreSQL database, Redis, moto's S3.

PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are required, not optional:
when either is unreachable the tests fail with a message saying so (``.ci/run`` starts
them). The S3 server is moto's, started in-process on a free loopback port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_HOST = os.environ.get("PIXELGATE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PIXELGATE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PIXELGATE_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("PIXELGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
S3_KEY_ID = "testing"
S3_SECRET = "testing-secret"
S3_REGION = "us-east-1"
#: tables that survive the per-test wipe
KEEP_TABLES = ("alembic_version", "pixelgate_queue_schema")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin_dsn(dbname: str = "postgres") -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def require_postgres() -> None:
    import psycopg

    try:
        with psycopg.connect(admin_dsn(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is required at {PG_HOST}:{PG_PORT} (user {PG_USER}) for the scale-out "
            f"tests and is not reachable: {exc}. Start it (see .ci/run).",
            pytrace=False,
        )


def require_redis(url: str = REDIS_URL) -> None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        pytest.fail(
            f"Redis is required at {url} for the scale-out tests and is not reachable: "
            f"{exc}. Start it (see .ci/run).",
            pytrace=False,
        )


@dataclass
class PgDatabase:
    name: str

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.name}"

    @property
    def dsn(self) -> str:
        return admin_dsn(self.name)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            return list(conn.execute(sql, params or None).fetchall())

    def wipe(self) -> None:
        """Empty every table but the schema bookkeeping (fast per-test isolation).

        DELETE with triggers and foreign keys off (``session_replication_role``) is an
        order of magnitude faster than TRUNCATE on tables this small.
        """
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
                if row[0] not in KEEP_TABLES
            ]
            conn.execute("SET LOCAL session_replication_role = replica")
            for name in names:
                conn.execute(f'DELETE FROM "{name}"')


@contextlib.contextmanager
def fresh_database(migrate: bool = True) -> Iterator[PgDatabase]:
    """``pixelgate_test_<random>``, migrated (Alembic + queue schema), dropped at the end."""
    import psycopg

    require_postgres()
    db = PgDatabase(f"pixelgate_test_{secrets.token_hex(5)}")
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db.name}"')
    try:
        if migrate:
            import asyncio

            from pixelgate.db.migrate import run_migrations_sync
            from pixelgate.queue.engine import install_schema

            run_migrations_sync(db.sqlalchemy_url)
            asyncio.run(install_schema(db.dsn))
        yield db
    finally:
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
        )

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        found: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            found += [obj["Key"] for obj in page.get("Contents", [])]
        return found

    def settings(self, root: str) -> dict[str, Any]:
        return {
            "storage_url": f"s3://{self.bucket}/{root}",
            "s3_allow_http": True,
            "storage_s3": {
                "endpoint_url": self.endpoint,
                "region": S3_REGION,
                "access_key_id": S3_KEY_ID,
                "secret_access_key": S3_SECRET,
            },
        }

    def env(self, root: str) -> dict[str, str]:
        return {
            "PIXELGATE_STORAGE_URL": f"s3://{self.bucket}/{root}",
            "PIXELGATE_S3_ALLOW_HTTP": "true",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": S3_REGION,
            "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        }


@contextlib.contextmanager
def moto_s3() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(endpoint=f"http://{host}:{port}", bucket="pixelgate-test")
    s3.client().create_bucket(Bucket=s3.bucket)
    try:
        yield s3
    finally:
        server.stop()


class RedisServer:
    """A redis-server of our own on a free port (restartable; never the shared one)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is required for the Redis restart test", pytrace=False)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
