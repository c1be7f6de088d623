"""structlog set-up: console or JSON lines, with secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "redact"]

_SECRET_NAMES = re.compile(r"(key|token|secret|password|authorization)", re.IGNORECASE)
_SECRET_VALUES = re.compile(r"\b(pg_[A-Za-z0-9_-]{16,}|sk-[A-Za-z0-9_-]{8,}|r8_[A-Za-z0-9]{8,})")


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop values of secret-looking fields and mask key-looking strings anywhere."""
    for field, value in list(event.items()):
        if field != "event" and _SECRET_NAMES.search(field) and field not in ("key_id",):
            event[field] = "***"
        elif isinstance(value, str):
            event[field] = _SECRET_VALUES.sub("***", value)
    return event


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
