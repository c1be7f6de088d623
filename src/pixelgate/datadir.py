"""The data directory and the SQLite files in it, with owner-only permissions.

The database holds prompts, e-mail addresses, webhook URLs and key hashes; on a shared host
neither it nor its WAL/SHM files may be readable by other users. New directories are
created 0700 and the database file 0600 *before* SQLite opens it (SQLite gives its WAL,
SHM and journal files the database file's mode); database files left readable by an
earlier version are tightened at start-up.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import unquote

from pixelgate.config import Settings

__all__ = ["DIR_MODE", "FILE_MODE", "data_dir_notice", "prepare_data_dir", "sqlite_path"]

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL (``sqlite+aiosqlite:////abs/path.db``); None otherwise."""
    if not database_url.startswith("sqlite"):
        return None
    _, sep, rest = database_url.partition(":///")
    path = unquote(rest.split("?", 1)[0]) if sep else ""
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        return None
    return Path(path)


def _make_dir(path: Path) -> None:
    if path.exists():
        return
    _make_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask


def _restrict_file(path: Path) -> None:
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.close(fd)
    if path.stat().st_mode & 0o077:
        os.chmod(path, FILE_MODE)


def data_dir_notice(settings: Settings) -> str:
    """The line said on a data directory's first use: where it is and how to choose another."""
    return (
        f"pixelgate: created the data directory {settings.data_dir.resolve()} "
        "(database, images, admin key); PIXELGATE_DATA_DIR chooses another"
    )


def prepare_data_dir(settings: Settings) -> bool:
    """Create the data directory (0700), local image directory (0700) and the SQLite
    database file (0600) when missing, and tighten existing database files to 0600.

    Returns:
        True when the data directory itself was created now (its first use).
    """
    created = not settings.data_dir.resolve().exists()
    _make_dir(settings.data_dir.resolve())
    storage = settings.resolved_storage_url
    if storage.startswith("file://"):
        _make_dir(Path(storage.removeprefix("file://")))  # as open_storage reads it
    db_file = sqlite_path(settings.resolved_database_url)
    if db_file is None:
        return created
    _make_dir(db_file.parent)
    with contextlib.suppress(FileExistsError):
        _restrict_file(db_file)
    for suffix in SQLITE_SIDE_FILES:
        side = db_file.with_name(db_file.name + suffix)
        if side.exists() and side.stat().st_mode & 0o077:
            os.chmod(side, FILE_MODE)
    return created
