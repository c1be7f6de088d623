"""Hot statements, run on SQLite straight through the driver.

SQLAlchemy Core builds a statement and compiles it once per parameter shape; after that,
an execution on SQLite is one ``sqlite3`` call plus the column types' own bind and
result processors. SQLAlchemy's execution context around each statement (parameter
processing, cursor and result set-up, events) cost 60 % of the group-commit thread's
time under load, more than SQLite itself (py-spy, native route at 64 connections).

What stays the same as ``Connection.execute``: the SQL (SQLAlchemy compiles it), the
values' conversion (the types' processors: timestamps, JSON, decimals), scalar column
defaults, ``before_cursor_execute``/``after_cursor_execute`` listeners, and errors
(wrapped in :mod:`sqlalchemy.exc` classes with parameters hidden, as the engines are
configured). Rows come back as named tuples (attribute and index access). On every other
dialect (PostgreSQL through asyncpg) a :class:`Prepared` is plain ``Connection.execute``.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.selectable import SelectBase

__all__ = ["Prepared"]

Params = Mapping[str, Any]


@dataclass(frozen=True)
class _Plan:
    sql: str
    #: values of the ``?`` in order: the parameters (and the statement's own constants,
    #: already processed) by name, then the types' processors where they have one
    fetch: Callable[[Params], tuple[Any, ...]]
    constants: dict[str, Any]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    #: the row class (``None``: the statement returns no rows), and the columns that
    #: have a result processor, by position (most have none)
    row: type | None
    columns: tuple[tuple[int, Callable[[Any], Any]], ...]

    def args(self, params: Params) -> Sequence[Any]:
        values = self.fetch({**self.constants, **params} if self.constants else params)
        if not self.processors:
            return values
        processed = list(values)
        for index, process in self.processors:
            processed[index] = process(processed[index])
        return processed


def _fetcher(names: Sequence[str]) -> Callable[[Params], tuple[Any, ...]]:
    """``itemgetter`` (one C call for every value), always answering a tuple."""
    if len(names) > 1:
        return itemgetter(*names)
    if names:
        name = names[0]
        return lambda params: (params[name],)
    return lambda params: ()


class Prepared:
    """A Core statement executed on SQLite without SQLAlchemy's per-call machinery.

    ``rows``/``first``/``scalar`` for statements that return rows (a ``SELECT``, or DML
    with ``RETURNING``), ``run`` for one parameter set and ``run_many`` for several (one
    ``executemany``). Parameters are given by the statement's bind names (for an INSERT
    or UPDATE without explicit binds, its column keys), all of them on every call.
    """

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._plans: dict[tuple[Dialect, tuple[str, ...]], _Plan] = {}

    # --- the calls ------------------------------------------------------------------

    def rows(self, c: Connection, params: Params) -> list[Any]:
        if c.dialect.name != "sqlite":
            return list(c.execute(self.statement, dict(params)).all())
        plan = self._plan(c.dialect, params)
        cursor = _execute(c, plan, plan.args(params), many=False)
        return [_row(plan, raw) for raw in cursor.fetchall()]

    def first(self, c: Connection, params: Params) -> Any | None:
        found = self.rows(c, params)
        return found[0] if found else None

    def scalar(self, c: Connection, params: Params) -> Any:
        found = self.first(c, params)
        return None if found is None else found[0]

    def run(self, c: Connection, params: Params) -> int:
        """Execute once; the number of rows changed."""
        if c.dialect.name != "sqlite":
            return int(c.execute(self.statement, dict(params)).rowcount)
        plan = self._plan(c.dialect, params)
        return int(_execute(c, plan, plan.args(params), many=False).rowcount)

    def run_many(self, c: Connection, params: Sequence[Params]) -> None:
        """Execute once per parameter set, in one ``executemany`` (all with the same keys)."""
        if not params:
            return
        if c.dialect.name != "sqlite":
            c.execute(self.statement, [dict(p) for p in params])
            return
        plan = self._plan(c.dialect, params[0])
        _execute(c, plan, [plan.args(p) for p in params], many=True)

    # --- compiling once ---------------------------------------------------------------

    def _plan(self, dialect: Dialect, params: Params) -> _Plan:
        key = (dialect, tuple(params))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _compile(self.statement, dialect, key[1])
        return plan


def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Plan:
    clause = cast(ClauseElement, statement)
    compiled = cast(SQLCompiler, clause.compile(dialect=dialect, column_keys=list(keys)))
    positions = compiled.positiontup
    assert positions is not None, "plans are made for SQLite only, whose ? binds by position"
    if compiled.escaped_bind_names:  # names SQLAlchemy rewrites: left to it, not guessed
        raise TypeError(f"escaped parameter names: {sorted(compiled.escaped_bind_names)}")
    defaults = _scalar_defaults(compiled)
    constants: dict[str, Any] = {}
    processors: list[tuple[int, Callable[[Any], Any]]] = []
    for index, name in enumerate(positions):
        bind = compiled.binds[name]
        if bind.expanding:
            raise TypeError(f"an expanding parameter ({name}) cannot be prepared")
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if name in keys:
            if process is not None:
                processors.append((index, process))
            continue
        if name in defaults:
            value = defaults[name]
        elif bind.callable is None and not bind.required:
            value = bind.value  # a literal of the statement
        else:
            raise TypeError(f"parameter {name!r} has no value")
        constants[name] = process(value) if process else value
    plan = partial(_Plan, compiled.string, _fetcher(positions), constants, tuple(processors))
    if not (isinstance(statement, SelectBase) or compiled.effective_returning):
        return plan(None, ())
    exported = list(cast(Any, statement).exported_columns)
    row = namedtuple("Row", [col.key for col in exported], rename=True)  # type: ignore[misc]
    results = [col.type.dialect_impl(dialect).result_processor(dialect, None) for col in exported]
    return plan(row, tuple((i, p) for i, p in enumerate(results) if p is not None))


def _scalar_defaults(compiled: SQLCompiler) -> dict[str, Any]:
    """Columns the statement fills from their Python-side defaults (a plain value only:
    a default computed per row would need SQLAlchemy's execution context)."""
    values: dict[str, Any] = {}
    for column in [*compiled.insert_prefetch, *compiled.update_prefetch]:
        default = column.default if column in compiled.insert_prefetch else column.onupdate
        if default is None or not default.is_scalar:
            raise TypeError(f"column {column.key!r} has a computed default")
        values[column.key] = cast(Any, default).arg
    return values


def _execute(c: Connection, plan: _Plan, args: Any, *, many: bool) -> Any:
    driver = c.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    dispatch = c.dispatch
    if dispatch.before_cursor_execute:
        dispatch.before_cursor_execute(c, cursor, plan.sql, args, None, many)
    try:
        if many:
            cursor.executemany(plan.sql, args)
        else:
            cursor.execute(plan.sql, args)
    except c.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            plan.sql,
            args,
            exc,
            c.dialect.loaded_dbapi.Error,
            hide_parameters=True,
            dialect=c.dialect,
        ) from exc
    if dispatch.after_cursor_execute:
        dispatch.after_cursor_execute(c, cursor, plan.sql, args, None, many)
    return cursor


def _row(plan: _Plan, raw: Sequence[Any]) -> Any:
    assert plan.row is not None
    if not plan.columns:
        return plan.row(*raw)
    values = list(raw)
    for index, process in plan.columns:
        values[index] = process(values[index])
    return plan.row(*values)
