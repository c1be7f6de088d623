"""The data directory and the database files are readable by their owner only (issue 14,
defect 8): a shared host's other users must not read prompts, e-mails or key hashes.

These are the embedded deployment's files (SQLite, local images), so the settings here
are embedded whatever ``--backend`` the suite runs with."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pixelgate.config import Settings, load_settings
from pixelgate.datadir import sqlite_path
from pixelgate.runtime import Runtime
from tests.conftest import ADMIN_KEY


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def embedded(tmp_path: Path) -> Callable[[], Settings]:
    """Settings of the embedded deployment in a fresh data directory."""
    return lambda: load_settings(data_dir=tmp_path / "data", admin_key=ADMIN_KEY)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most hosts run with: files 0644 unless we say otherwise
    yield
    os.umask(old)


async def test_a_new_data_dir_and_database_are_owner_only(
    embedded: Callable[[], Settings], usual_umask: None
) -> None:
    settings = embedded()
    runtime = await Runtime.open(settings)
    try:
        await runtime.store.create_account("someone", email="someone@example.com")
        db_file = sqlite_path(settings.resolved_database_url)
        assert db_file is not None
        files = [db_file, *(db_file.with_name(db_file.name + s) for s in ("-wal", "-shm"))]
        assert files[1].exists()  # WAL mode: the side files exist while it is open
        modes = {p.name: oct(_mode(p)) for p in files if p.exists()}
        assert set(modes.values()) == {"0o600"}, modes
        assert _mode(settings.data_dir) == 0o700
        assert _mode(settings.data_dir / "images") == 0o700
    finally:
        await runtime.close()


async def test_an_existing_world_readable_database_is_tightened_at_start(
    embedded: Callable[[], Settings], usual_umask: None
) -> None:
    settings = embedded()
    await (await Runtime.open(settings)).close()
    db_file = sqlite_path(settings.resolved_database_url)
    assert db_file is not None
    os.chmod(db_file, 0o644)
    await (await Runtime.open(settings)).close()
    assert _mode(db_file) == 0o600


def test_sqlite_paths_are_read_from_the_url() -> None:
    assert sqlite_path("sqlite+aiosqlite:////srv/pg/pixelgate.db") == Path("/srv/pg/pixelgate.db")
    assert sqlite_path("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_path("postgresql+asyncpg://u@h/db") is None
