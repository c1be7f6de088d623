"""SQLAlchemy errors without the statement's bound values, for every engine of the process.

A failed statement's exception text carries its parameters (``[parameters: …]``): the
prompt, metadata, URLs and key hashes of the row. ``hide_parameters=True`` on an engine
removes them; this hook does the same for every engine, including ones created by
Alembic or by code that forgets the flag.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext

__all__ = ["hide_statement_parameters"]


def _hide(context: ExceptionContext) -> None:
    if context.sqlalchemy_exception is not None:
        context.sqlalchemy_exception.hide_parameters = True


def hide_statement_parameters() -> None:
    """Install the hook once (idempotent)."""
    if not event.contains(Engine, "handle_error", _hide):
        event.listen(Engine, "handle_error", _hide)
