"""Routes never hold a session or the store: they call the pipeline and ``runtime.services``.

``api/`` and the web UI (``ui/``) neither import :mod:`pixelgate.db` (nor SQLAlchemy)
nor reach the concrete store or the database through the runtime (``runtime.store``,
``runtime.db``); what they read and change goes through
:class:`pixelgate.core.services.Services`, typed by the protocols of
:mod:`pixelgate.core.queries`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pixelgate.api
import pixelgate.ui

API = Path(pixelgate.api.__file__).parent
#: the packages that serve HTTP: the API and the web UI
ROUTES = (API, Path(pixelgate.ui.__file__).parent)
FORBIDDEN_IMPORTS = ("pixelgate.db", "sqlalchemy")
#: runtime attributes that are the database itself
FORBIDDEN_ATTRIBUTES = frozenset({"store", "db"})
#: nothing is allowed yet; an entry needs a reason next to it
ALLOWED: dict[str, str] = {}


def offences_in(source: str) -> list[str]:
    """Imports of the database layer, and ``<anything>.store`` / ``<anything>.db``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        modules: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        for module in modules:
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN_IMPORTS):
                found.append((node.lineno, f"imports {module}"))
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {what}" for line, what in sorted(found)]


def test_api_and_ui_never_touch_the_store_or_the_database() -> None:
    offences = [
        f"{path.relative_to(API.parent)}:{offence}"
        for root in ROUTES
        for path in sorted(root.rglob("*.py"))
        for offence in offences_in(path.read_text(encoding="utf-8"))
        if f"{path.relative_to(API.parent)}:{offence}" not in ALLOWED
    ]
    assert offences == []


def test_the_check_sees_store_access_and_database_imports() -> None:
    source = (
        "from pixelgate.db.reports import Reports\n"
        "import sqlalchemy\n"
        "async def f(runtime):\n"
        "    await runtime.store.get_generation('g')\n"
        "    Reports(runtime.db)\n"
        "    await runtime.services.records.get_generation('g')\n"
    )
    assert offences_in(source) == [
        "1: imports pixelgate.db.reports",
        "2: imports sqlalchemy",
        "4: runtime.store",
        "5: runtime.db",
    ]
