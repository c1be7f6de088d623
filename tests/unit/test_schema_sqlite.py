"""The SQLite DDL a first start executes is the ORM metadata's, statement for statement."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pixelgate.db.ddl import MODULE, module_source, render_sqlite
from pixelgate.db.schema_sqlite import STATEMENTS


def test_the_prerendered_statements_are_what_create_all_sends() -> None:
    """A model changed without ``python -m pixelgate.db.ddl`` fails here."""
    assert render_sqlite() == STATEMENTS


def test_the_module_is_the_generators_output() -> None:
    assert Path(MODULE).read_text(encoding="utf-8") == module_source(STATEMENTS)


def test_every_table_and_index_is_there_once() -> None:
    from pixelgate.db.tables import Base

    created = [s.strip().split("\n")[0] for s in STATEMENTS]
    tables = [line.split()[2] for line in created if line.startswith("CREATE TABLE")]
    indexes = [m[1] for line in created if (m := re.match(r"CREATE (?:UNIQUE )?INDEX (\S+)", line))]
    assert sorted(tables) == sorted([*Base.metadata.tables, "alembic_version"])
    expected = [ix.name for table in Base.metadata.tables.values() for ix in table.indexes]
    assert sorted(indexes) == sorted(expected)
    assert len(created) == len(tables) + len(indexes)


def test_the_rendering_does_not_depend_on_set_order() -> None:
    """A table's indexes come from a set; the written order must not change with the
    hash seed of the process that rendered it."""
    script = "from pixelgate.db.ddl import render_sqlite; print(repr(render_sqlite()))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(seen) == 1
