"""``Prepared`` on SQLite does what ``Connection.execute`` does with the same statement:
the same rows and values, defaults, listeners and errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from pixelgate.db.prepared import Prepared
from pixelgate.db.tables import UTCDateTime

META = MetaData()
ITEMS = Table(
    "items",
    META,
    Column("id", String(8), primary_key=True),
    Column("index", Integer, nullable=False),  # a keyword as a column name
    Column("state", String(8), nullable=False, default="new"),
    Column("data", JSON, nullable=False),
    Column("usd", Numeric(12, 6)),
    Column("at", UTCDateTime()),
)
COUNTERS = Table(
    "counters",
    META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("stamp", String(40), default=lambda: "computed"),
)
AT = datetime(2026, 12, 6, 5, 0, 1, 250, tzinfo=UTC)


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://", hide_parameters=True)
    META.create_all(engine)
    yield engine
    engine.dispose()


def _row(i: int) -> dict[str, Any]:
    return {
        "id": f"i{i}",
        "index": i,
        "data": {"n": i, "tags": ["a"]},
        "usd": Decimal("0.04"),
        "at": AT,
    }


def _all(c: Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in c.execute(select(ITEMS).order_by(ITEMS.c.id))]


def test_an_insert_writes_what_sqlalchemy_writes(engine: Engine) -> None:
    with engine.begin() as c:
        Prepared(insert(ITEMS)).run_many(c, [_row(1), _row(2)])
        mine = _all(c)
        c.execute(ITEMS.delete())
        c.execute(insert(ITEMS), [_row(1), _row(2)])
        assert mine == _all(c)
    assert mine[0] == ("i1", 1, "new", {"n": 1, "tags": ["a"]}, Decimal("0.040000"), AT)


def test_update_returning_gives_processed_rows_by_name(engine: Engine) -> None:
    statement = Prepared(
        update(ITEMS)
        .where(ITEMS.c.id == bindparam("key"), ITEMS.c.state.in_([literal("new"), literal("x")]))
        .values(state=bindparam("to"), data=bindparam("doc"))
        .returning(*ITEMS.c)
    )
    with engine.begin() as c:
        c.execute(insert(ITEMS), [_row(1)])
        row = statement.first(c, {"key": "i1", "to": "done", "doc": {"ok": True}})
        assert row is not None
        assert (row.id, row.index, row.state, row.data, row.at) == (
            "i1",
            1,
            "done",
            {"ok": True},
            AT,
        )
        assert row.at.tzinfo is UTC and row[4] == Decimal("0.040000")
        # the literals of the statement are bound too: "done" is no longer in the list
        assert statement.first(c, {"key": "i1", "to": "again", "doc": {}}) is None
        assert statement.run(c, {"key": "missing", "to": "x", "doc": {}}) == 0


def test_select_scalar_and_no_row(engine: Engine) -> None:
    count = Prepared(select(func.count()).select_from(ITEMS).where(ITEMS.c.index > bindparam("n")))
    with engine.begin() as c:
        c.execute(insert(ITEMS), [_row(1), _row(2), _row(3)])
        assert count.scalar(c, {"n": 1}) == 2
        assert Prepared(select(ITEMS.c.id).where(ITEMS.c.id == "nope")).first(c, {}) is None


def test_an_integrity_error_is_sqlalchemys_with_parameters_hidden(engine: Engine) -> None:
    with engine.begin() as c:
        c.execute(insert(ITEMS), [_row(1)])
        with pytest.raises(IntegrityError) as caught:
            Prepared(insert(ITEMS)).run(c, {**_row(1), "data": {"secret": "s3cr3t"}})
    assert "UNIQUE" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_listeners_see_each_statement(engine: Engine) -> None:
    seen: list[tuple[str, bool]] = []

    def before(conn: Any, cursor: Any, sql: str, params: Any, ctx: Any, many: bool) -> None:
        seen.append((sql.split()[0], many))

    event.listen(Engine, "before_cursor_execute", before)
    try:
        with engine.begin() as c:
            Prepared(insert(ITEMS)).run_many(c, [_row(1), _row(2)])
            Prepared(select(ITEMS.c.id)).rows(c, {})
    finally:
        event.remove(Engine, "before_cursor_execute", before)
    assert ("INSERT", True) in seen and ("SELECT", False) in seen


def test_a_computed_default_is_refused_not_skipped(engine: Engine) -> None:
    with engine.begin() as c, pytest.raises(TypeError, match="stamp"):
        Prepared(insert(COUNTERS)).run(c, {})


def test_a_missing_parameter_is_refused(engine: Engine) -> None:
    with engine.begin() as c, pytest.raises(TypeError, match="key"):
        Prepared(select(ITEMS).where(ITEMS.c.id == bindparam("key"))).rows(c, {})


def test_a_parameter_name_sqlalchemy_escapes_is_refused(engine: Engine) -> None:
    dotted = Table("dotted", MetaData(), Column("a.b", Integer), Column("c", Integer))
    dotted.metadata.create_all(engine)
    with engine.begin() as c, pytest.raises(TypeError, match="escaped"):
        Prepared(insert(dotted)).run(c, {"a.b": 1, "c": 2})
