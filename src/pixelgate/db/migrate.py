"""Bringing a database to the newest schema: Alembic's migrations, or on an empty
database the newest schema at once (:mod:`pixelgate.db.fresh`), and reading which
revision a database is at, both without importing Alembic where they can."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from pixelgate.db.engine import ensure_sqlite_dir, plain_sqlite_file
from pixelgate.db.fresh import create_fresh_schema

__all__ = ["head_revision", "run_migrations", "run_migrations_sync", "schema_revision"]


def _sqlite_revision(path: str) -> str | None:
    """:func:`schema_revision` over one ``sqlite3`` connection (no engine, no aiosqlite)."""
    conn = sqlite3.connect(path)
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).fetchone()
        if found is None:
            return None
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        conn.close()
    if len(rows) > 1:
        raise ValueError(f"{path}: alembic_version holds {len(rows)} rows")
    return str(rows[0][0]) if rows else None


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def run_migrations_sync(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (blocking; runs its own event loop)."""
    from alembic import command

    if url.startswith("sqlite"):
        ensure_sqlite_dir(url)
    command.upgrade(_alembic_config(url), revision)


async def run_migrations(url: str, revision: str = "head") -> None:
    """Apply migrations from async code (Alembic's async env needs its own loop).

    A database already at the newest revision (every restart) is left alone without
    importing Alembic and loading its scripts, ~0.14 s of a start; an empty one gets the
    newest schema in one transaction (:mod:`pixelgate.db.fresh`), also without Alembic.
    """
    if revision == "head":
        head = head_revision()
        if head is not None:
            current = await _revision_or_none(url)
            if current == head:
                return
            if current is None and await _fresh_or_false(url, head):
                return
    await asyncio.to_thread(run_migrations_sync, url, revision)


_REVISION = re.compile(r'^revision: str = "([^"]+)"$', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision: str \| None = (?:"([^"]+)"|None)$', re.MULTILINE)


def head_revision() -> str | None:
    """The newest migration, read from the version files without importing Alembic;
    None when they do not read as one line of revisions (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (Path(__file__).parent / "migrations" / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision[1])
        if down[1]:
            parents.add(down[1])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def schema_revision(url: str) -> str | None:
    """The Alembic revision the database is at, or ``None`` before the first migration
    (read from ``alembic_version`` without importing Alembic)."""
    if url.startswith("sqlite"):
        ensure_sqlite_dir(url)
        path = plain_sqlite_file(url)
        if path is not None:
            return await asyncio.to_thread(_sqlite_revision, path)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
                return None
            found = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return found.scalar_one_or_none()
    finally:
        await engine.dispose()


async def _fresh_or_false(url: str, head: str) -> bool:
    """:func:`~pixelgate.db.fresh.create_fresh_schema`, or False when it fails (an
    unreachable database: Alembic then reports why)."""
    try:
        return await create_fresh_schema(url, head)
    except Exception:
        return False


async def _revision_or_none(url: str) -> str | None:
    """:func:`schema_revision`, or None when it cannot be read (an unreachable database:
    Alembic then reports why)."""
    try:
        return await schema_revision(url)
    except Exception:
        return None
