"""``pixelgate migrate`` says what it did: a fresh PostgreSQL database, then a second run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import base_env
from tests.scaleout.services import PgDatabase, fresh_database


def _migrate(url: str, data_dir: Path) -> str:
    env = {**base_env(), "PIXELGATE_DATABASE_URL": url, "PIXELGATE_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "pixelgate", "migrate"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_migrate_reports_what_it_installed_on_a_fresh_database(tmp_path: Path) -> None:
    with fresh_database(migrate=False) as db:
        first = _migrate(db.sqlalchemy_url, tmp_path / "data")
        assert "up to date" not in first
        assert "schema empty -> " in first and "procrastinate queue schema installed" in first
        assert "database is up to date" in _migrate(db.sqlalchemy_url, tmp_path / "data")


def _pg_schema_and_rows(db: PgDatabase) -> tuple[Any, Any]:
    from sqlalchemy import create_engine

    from tests.schema import rows_of, schema_of

    engine = create_engine(db.sqlalchemy_url.replace("+asyncpg", "+psycopg"))
    try:
        with engine.connect() as conn:
            return schema_of(conn), rows_of(conn)
    finally:
        engine.dispose()


def test_a_new_database_created_from_the_metadata_equals_the_migrated_one() -> None:
    """On PostgreSQL too, the empty-database road (tables from the ORM metadata, the head
    stamped, one transaction) gives the schema, indexes, constraints and rows of every
    migration run one after the other."""
    from pixelgate.db.fresh import create_fresh_schema
    from pixelgate.db.migrate import head_revision, run_migrations_sync

    head = head_revision()
    assert head is not None
    with fresh_database(migrate=False) as created, fresh_database(migrate=False) as migrated:
        assert asyncio.run(create_fresh_schema(created.sqlalchemy_url, head))
        # a second start finds tables: it leaves them (and the revision) alone
        assert not asyncio.run(create_fresh_schema(created.sqlalchemy_url, head))
        run_migrations_sync(migrated.sqlalchemy_url)
        schema, rows = _pg_schema_and_rows(created)
        assert any(table["indexes"] for table in schema["tables"].values())
        assert (schema, rows) == _pg_schema_and_rows(migrated)
        assert rows["alembic_version"] == [(head,)]
