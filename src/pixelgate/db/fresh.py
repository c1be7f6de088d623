"""A new, empty database gets the newest schema in one transaction: the tables from the
ORM metadata, then the head revision stamped in ``alembic_version`` (Alembic's cookbook
recipe "Building an Up to Date Database from Scratch").

Replaying every migration costs a first start ~0.2 s and ~10 MB that stay resident
(Alembic, Mako and the Pygments lexers Mako loads); this needs neither. A database that
holds any table is never touched here: Alembic migrates it as before.
``tests/integration/test_migrations.py`` (SQLite) and ``tests/scaleout/test_migrate.py``
(PostgreSQL) prove that both roads give the same schema.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    inspect,
    text,
)
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

__all__ = ["VERSION_TABLE", "create_fresh_schema"]

VERSION_TABLE = "alembic_version"
#: PostgreSQL advisory lock key of the creation: processes starting together on one new
#: database create it once (the others then find it at the head)
_LOCK_KEY = 0x70676672  # "pgfr"


def _version_table() -> Table:
    """``alembic_version`` exactly as Alembic creates it (``MigrationContext``)."""
    return Table(
        VERSION_TABLE,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )


def _create_if_empty(conn: Connection, head: str) -> bool:
    from pixelgate.db.tables import Base

    if inspect(conn).get_table_names():
        return False
    Base.metadata.create_all(conn)
    version = _version_table()
    version.create(conn)
    conn.execute(version.insert().values(version_num=head))
    return True


def _create_sqlite(url: str, head: str) -> bool:
    from pixelgate.db.engine import _ensure_sqlite_dir, _sqlite_pragmas

    _ensure_sqlite_dir(url)
    engine = create_engine(url.replace("+aiosqlite", ""), poolclass=NullPool)
    # BEGIN IMMEDIATE around the DDL too (pysqlite would commit each CREATE on its own):
    # the schema appears whole or not at all
    _sqlite_pragmas(engine, writer=True)
    try:
        with engine.begin() as conn:
            return _create_if_empty(conn, head)
    finally:
        engine.dispose()


async def create_fresh_schema(url: str, head: str) -> bool:
    """Create the schema at revision ``head`` when the database has no table at all;
    whether it did (False: not empty, Alembic decides)."""
    if url.startswith("sqlite"):
        return await asyncio.to_thread(_create_sqlite, url, head)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:  # PostgreSQL's DDL is transactional
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            return bool(await conn.run_sync(_create_if_empty, head))
    finally:
        await engine.dispose()
