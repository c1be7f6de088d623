"""structlog set-up: console or JSON lines (``log_format``), with secrets redacted.

Redaction runs twice: on the event's fields (a field named like a secret loses its value),
and on the finished line, *after* exceptions and tracebacks have been formatted, so that a
key, a token or a request's parameters inside an exception message or a SQLAlchemy
``[parameters: …]`` line never reach the output. The standard library's loggers (uvicorn's
error logger among them) go through the same pipeline.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "redact", "redact_text", "resolve_format"]

_SECRET_NAMES = re.compile(r"(key|token|secret|password|authorization|cookie)", re.IGNORECASE)
_KEEP = frozenset({"event", "key_id", "idempotency_key_set"})
_SECRET_VALUES = re.compile(
    r"\b(pg_[A-Za-z0-9_-]{16,}|sk-[A-Za-z0-9_-]{8,}|r8_[A-Za-z0-9]{8,}|AKIA[0-9A-Z]{16})"
)
#: SQLAlchemy error text carries the statement's bound values: request text, URLs, hashes
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*\](?=[ \t]*$)", re.MULTILINE)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
#: ``"api_token": "…"``, ``api_key='…'``, ``password=…`` inside formatted text
_NAMED_VALUE = re.compile(
    r"""(?ix)
    (["']?[\w.-]*(?:api[_-]?key|access[_-]?key|secret|token|password|passwd|authorization)
     [\w.-]*["']?\s*[:=]\s*)
    ("[^"]*"|'[^']*'|[^\s,;)}\]]+)
    """
)
REDACTED = "***"


def redact_text(text: str) -> str:
    """Mask secret-looking values in already formatted text (tracebacks included)."""
    text = _SQL_PARAMETERS.sub("[parameters: hidden]", text)
    text = _SECRET_VALUES.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m[1]} {REDACTED}", text)
    return _NAMED_VALUE.sub(_mask_named, text)


def _mask_named(match: re.Match[str]) -> str:
    value = match[2]
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match[1]}{quote}{REDACTED}{quote}"


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if _secret_name(k) else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _secret_name(name: Any) -> bool:
    return isinstance(name, str) and name not in _KEEP and bool(_SECRET_NAMES.search(name))


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop values of secret-looking fields and mask key-looking strings anywhere."""
    for field, value in list(event.items()):
        if field == "event":
            if isinstance(value, str):
                event[field] = redact_text(value)
        elif _secret_name(field):
            event[field] = REDACTED
        else:
            event[field] = _redact_value(value)
    return event


class _RedactedRenderer:
    """The renderer, then :func:`redact_text` over the whole line."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        return redact_text(str(self.renderer(logger, name, event)))


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def resolve_format(fmt: str) -> str:
    """``auto``: ``console`` when stderr is a terminal, ``json`` (lines) otherwise."""
    if fmt != "auto":
        return fmt
    return "console" if sys.stderr.isatty() else "json"


def configure_logging(level: str = "info", fmt: str = "auto", *, cache: bool = True) -> None:
    """structlog for pixelgate's own events, and the same pipeline for stdlib loggers.

    ``fmt``: ``json`` (one JSON object a line), ``console`` (human-readable) or ``auto``.
    ``cache=False`` lets a later call reconfigure loggers already used (tests).
    """
    fmt = resolve_format(fmt)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # exceptions are formatted first, then everything (traceback text too) is redacted
    tail: list[Any] = [structlog.processors.format_exc_info, redact, _RedactedRenderer(renderer)]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    handler.set_name("pixelgate")
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != "pixelgate"]
    root.addHandler(handler)
    # libraries' own chatter (httpx logs every request at INFO) stays out below WARNING
    root.setLevel(max(numeric, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
        # uvicorn's own handlers print tracebacks unredacted: its records go to ours
        uv = logging.getLogger(name)
        uv.handlers = []
        uv.propagate = True
