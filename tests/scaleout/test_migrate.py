"""``pixelgate migrate`` says what it did: a fresh PostgreSQL database, then a second run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import base_env
from tests.scaleout.services import fresh_database


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
