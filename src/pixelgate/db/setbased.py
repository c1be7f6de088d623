"""Set-based statements on PostgreSQL: the rows of many jobs in ONE statement per table.

A group commit's batch of finishes used to run four statements per job (the finishing
``UPDATE``, the images, the usage upsert, the events): through SQLAlchemy and asyncpg
each costs far more Python than PostgreSQL spends on it (a quarter of the scale-out
worker's CPU, measured). Here the rows travel as one JSON document that
``json_to_recordset`` turns back into typed columns: one parameter, one prepared
statement whatever the number of rows, and the values' conversion done by PostgreSQL.

The values are serialized by the engine's JSON serializer, as a JSON column's are, and
converted by the columns' own input functions (timestamps, numerics), so what is stored
is what the statements of one job store; a JSON column given ``None`` keeps the JSON
``null`` SQLAlchemy writes for it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    Table,
    TableValuedAlias,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    select,
    update,
)

__all__ = ["insert_rows", "update_rows", "upsert_rows"]

_ROWS = "rows"
_JSON_NULL = literal_column("'null'::json", JSON)


def insert_rows(c: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ``rows`` (all with the same keys, the table's column names) in one
    statement; generated ids follow the order given."""
    if rows:
        c.execute(_insert(table, tuple(rows[0])), {_ROWS: list(rows)})


def upsert_rows(
    c: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: tuple[str, ...],
    add: tuple[str, ...],
) -> None:
    """INSERT ``rows`` or, where ``key`` exists already, add their ``add`` columns to
    it. ``rows`` must not repeat a key (one statement cannot change a row twice)."""
    if rows:
        c.execute(_upsert(table, tuple(rows[0]), key, add), {_ROWS: list(rows)})


def update_rows(
    c: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    match: tuple[tuple[str, str], ...],
    condition: tuple[ColumnElement[bool], ...] = (),
    keep_first: tuple[str, ...] = (),
    returning: bool = True,
    omit: tuple[str, ...] = (),
) -> list[Any]:
    """UPDATE the rows of ``table`` that each of ``rows`` names; the updated rows (with
    ``returning``, without the ``omit`` columns; else none).

    Each of ``rows`` holds the values to set and, under the names ``match`` pairs with
    columns, the values that pick its row (``(("gen_id", "id"),)``: the row whose
    ``id`` is its ``gen_id``); ``condition`` is added for every row; a ``keep_first``
    column keeps a value it has already (``coalesce``).
    """
    if not rows:
        return []
    names = tuple(rows[0])
    statement = _update(table, names, match, condition, keep_first, returning, omit)
    result = c.execute(statement, {_ROWS: list(rows)})
    return list(result.all()) if returning else []


# --- statements, built once per shape ----------------------------------------------


def _recordset(table: Table, names: tuple[str, ...], types: dict[str, Any]) -> TableValuedAlias:
    """``json_to_recordset(:rows) AS r(name type, ...)``: one function scan, which
    yields the rows in the document's order (so generated ids follow it)."""
    columns = [column(name, types.get(name) or table.c[name].type) for name in names]
    return (
        func.json_to_recordset(bindparam(_ROWS, type_=JSON))
        .table_valued(*columns)
        .render_derived(name="r", with_types=True)
    )


def _value(table: Table, r: TableValuedAlias, name: str) -> ColumnElement[Any]:
    value: ColumnElement[Any] = r.c[name]
    if isinstance(table.c[name].type, JSON):
        # SQLAlchemy stores None in a JSON column as JSON null, not SQL NULL
        value = func.coalesce(value, _JSON_NULL)
    return value


@functools.cache
def _insert(table: Table, names: tuple[str, ...]) -> Any:
    r = _recordset(table, names, {})
    values = select(*[_value(table, r, name) for name in names])
    return insert(table).from_select(list(names), values)


@functools.cache
def _upsert(
    table: Table, names: tuple[str, ...], key: tuple[str, ...], add: tuple[str, ...]
) -> Any:
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    r = _recordset(table, names, {})
    values = select(*[_value(table, r, name) for name in names])
    statement = pg_insert(table).from_select(list(names), values)
    return statement.on_conflict_do_update(
        index_elements=list(key),
        set_={name: table.c[name] + statement.excluded[name] for name in add},
    )


@functools.cache
def _update(
    table: Table,
    names: tuple[str, ...],
    match: tuple[tuple[str, str], ...],
    condition: tuple[ColumnElement[bool], ...],
    keep_first: tuple[str, ...],
    returning: bool,
    omit: tuple[str, ...] = (),
) -> Any:
    matched = dict(match)
    types = {name: table.c[target].type for name, target in match}
    r = _recordset(table, names, types)
    values: dict[str, Any] = {}
    for name in names:
        if name in matched:
            continue
        value = _value(table, r, name)
        target = cast(Column[Any], table.c[name])
        values[name] = func.coalesce(target, value) if name in keep_first else value
    where = [table.c[target] == r.c[name] for name, target in match]
    statement = update(table).where(*where, *condition).values(values)
    if not returning:
        return statement
    return statement.returning(*(column for column in table.c if column.name not in omit))
