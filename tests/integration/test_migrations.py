"""Start-up migrations: a new database is migrated to the newest revision, an older one
upgraded, and one already there (every restart) is left alone without loading Alembic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from pixelgate.db.migrate import head_revision, run_migrations, run_migrations_sync, schema_revision


def test_the_head_read_from_the_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from pixelgate.db.migrate import _alembic_config

    assert (
        head_revision()
        == ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    )


async def test_new_and_older_databases_are_migrated_to_the_head(tmp_path: Path) -> None:
    new = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    await run_migrations(new)
    assert await schema_revision(new) == head_revision()
    older = f"sqlite+aiosqlite:///{tmp_path / 'older.db'}"
    await run_migrations(older, "0003")
    assert await schema_revision(older) == "0003"
    await run_migrations(older)
    assert await schema_revision(older) == head_revision()


def test_a_database_at_the_head_is_left_alone_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'at-head.db'}"
    run_migrations_sync(url)
    script = (
        "import asyncio, sys\n"
        "from pixelgate.db.migrate import run_migrations\n"
        f"asyncio.run(run_migrations({url!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def _sqlite_schema_and_rows(path: Path) -> tuple[Any, Any]:
    from sqlalchemy import create_engine

    from tests.schema import rows_of, schema_of

    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return schema_of(conn), rows_of(conn)
    finally:
        engine.dispose()


async def test_a_new_database_created_from_the_metadata_equals_the_migrated_one(
    tmp_path: Path,
) -> None:
    """The fast road for an empty database (tables from the ORM metadata, the head
    stamped) gives the very schema, indexes, constraints and rows of every migration run
    one after the other."""
    from pixelgate.db.fresh import create_fresh_schema

    head = head_revision()
    assert head is not None
    created = tmp_path / "created.db"
    assert await create_fresh_schema(f"sqlite+aiosqlite:///{created}", head)
    migrated = tmp_path / "migrated.db"
    await asyncio.to_thread(run_migrations_sync, f"sqlite+aiosqlite:///{migrated}")
    schema, rows = _sqlite_schema_and_rows(created)
    assert schema["tables"]["alembic_version"]["primary_key"] == (
        "alembic_version_pkc",
        ["version_num"],
    )
    assert any(table["indexes"] for table in schema["tables"].values())
    assert (schema, rows) == _sqlite_schema_and_rows(migrated)
    assert rows["alembic_version"] == [(head,)]


async def test_a_database_with_tables_is_left_to_alembic(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from pixelgate.db.fresh import create_fresh_schema

    path = tmp_path / "not-empty.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    assert not await create_fresh_schema(f"sqlite+aiosqlite:///{path}", "0005")
    assert await schema_revision(f"sqlite+aiosqlite:///{path}") is None


def test_a_new_database_is_created_without_alembic(tmp_path: Path) -> None:
    """The first start on a new data dir loads neither Alembic nor Mako (and the Pygments
    lexers Mako loads): ~0.2 s and ~10 MB resident."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    script = (
        "import asyncio, sys\n"
        "from pixelgate.db.migrate import run_migrations, schema_revision\n"
        f"asyncio.run(run_migrations({url!r}))\n"
        f"print(asyncio.run(schema_revision({url!r})))\n"
        "print(sorted(m for m in ('alembic', 'mako') if m in sys.modules))\n"
    )
    assert _run_python(script).split("\n")[:2] == [head_revision(), "[]"]


def _run_python(script: str) -> str:
    """``script`` in a new interpreter (its imports its own); what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _sqlite_master(path: Path) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


async def test_the_prerendered_schema_is_the_one_create_all_makes(tmp_path: Path) -> None:
    """The pre-rendered statements give the very ``sqlite_master`` (each object's SQL
    text as SQLite keeps it) of the metadata's ``create_all``, in WAL mode, through a
    plain path and through a URL only SQLAlchemy reads (a query string)."""
    from sqlalchemy import create_engine

    from pixelgate.db.fresh import create_fresh_schema, version_table
    from pixelgate.db.tables import Base

    head = head_revision()
    assert head is not None
    reference = tmp_path / "create_all.db"
    engine = create_engine(f"sqlite:///{reference}")
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        version = version_table()
        version.create(conn)
        conn.execute(version.insert().values(version_num=head))
    engine.dispose()
    expected = _sqlite_master(reference)
    assert len(expected) > 20
    for url in (
        f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        f"sqlite+aiosqlite:///{tmp_path / 'b.db'}?timeout=9",
    ):
        assert await create_fresh_schema(url, head)
        path = Path(url.split("///", 1)[1].split("?")[0])
        assert _sqlite_master(path) == expected
        assert await schema_revision(url) == head
        import sqlite3

        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.close()
        assert not await create_fresh_schema(url, head)  # a second start leaves it


def test_a_start_reads_and_creates_sqlite_without_an_engine(tmp_path: Path) -> None:
    """The revision is read, and an empty database created, over ``sqlite3`` alone:
    neither aiosqlite nor the ORM metadata is loaded for it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    script = (
        "import asyncio, sys\n"
        "from pixelgate.db.migrate import run_migrations\n"
        f"asyncio.run(run_migrations({url!r}))\n"
        f"asyncio.run(run_migrations({url!r}))\n"
        "print(sorted(m for m in ('aiosqlite', 'pixelgate.db.tables') if m in sys.modules))\n"
    )
    assert _run_python(script).strip() == "[]"


async def test_a_revision_table_of_several_rows_is_left_to_alembic(tmp_path: Path) -> None:
    import sqlite3

    from pixelgate.db.migrate import _revision_or_none

    path = tmp_path / "two.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    conn.executemany("INSERT INTO alembic_version VALUES (?)", [("0001",), ("0002",)])
    conn.commit()
    conn.close()
    assert await _revision_or_none(f"sqlite+aiosqlite:///{path}") is None
