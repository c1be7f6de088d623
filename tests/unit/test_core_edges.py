"""core depends on protocols: no database, Redis, HTTP or SMTP library is imported by it.

STYLE.md: ``api, cli, web → core → (providers, queue, storage, media, db via protocols)``.
The concrete store is handed over by the composition root (``runtime.py``) as
:class:`pixelgate.core.ports.RecordStore`; infrastructure lives with its kind
(``queue/bus_redis.py``, ``delivery/smtp.py``, ``delivery/webhooks.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pixelgate.core

CORE = Path(pixelgate.core.__file__).parent
#: what core must not import, not even inside a function or under ``TYPE_CHECKING``
FORBIDDEN = ("httpx", "redis", "smtplib", "aiosmtplib", "sqlalchemy", "pixelgate.db")


def imports_of(source: str) -> list[tuple[int, str]]:
    """Every absolute import anywhere in ``source``, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_core_imports_no_database_redis_http_or_smtp_library() -> None:
    offences = [
        f"{path.name}:{line} imports {module}"
        for path in sorted(CORE.glob("*.py"))
        for line, module in imports_of(path.read_text(encoding="utf-8"))
        if forbidden(module)
    ]
    assert offences == []


def test_the_check_sees_imports_in_functions_and_type_checking_blocks() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import httpx2\n"
        "if TYPE_CHECKING:\n    from redis.asyncio import Redis\n"
        "def f():\n    import sqlalchemy.orm\n    from pixelgate.db.store import Store\n"
    )
    modules = [module for _, module in imports_of(source) if forbidden(module)]
    assert modules == ["redis.asyncio", "sqlalchemy.orm", "pixelgate.db.store"]
