"""Start-up migrations: a new database is migrated to the newest revision, an older one
upgraded, and one already there (every restart) is left alone without loading Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pixelgate.db.engine import head_revision, run_migrations, run_migrations_sync, schema_revision


def test_the_head_read_from_the_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from pixelgate.db.engine import _alembic_config

    assert head_revision() == ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


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
        "from pixelgate.db.engine import run_migrations\n"
        f"asyncio.run(run_migrations({url!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
