"""``UTCDateTime``'s SQLite fast path writes exactly what SQLAlchemy's own type writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, DateTime, MetaData, Table, create_engine, insert, select
from sqlalchemy.dialects import sqlite

from pixelgate.db.tables import UTCDateTime

VALUES = [
    datetime(2026, 12, 6, 2, 25, 37, 306231, tzinfo=UTC),
    datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: still written with them
    datetime(2026, 5, 1, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(9, 1, 2, 3, 4, 5, tzinfo=UTC),  # a year under 1000: zero-padded
]


@pytest.mark.parametrize("value", VALUES)
def test_the_sqlite_text_is_sqlalchemys(value: datetime) -> None:
    dialect = sqlite.dialect()
    theirs = DateTime().dialect_impl(dialect).bind_processor(dialect)
    ours = UTCDateTime().bind_processor(dialect)
    assert ours(value) == theirs(value.astimezone(UTC).replace(tzinfo=None))


def test_values_read_back_aware_and_equal_through_sqlite() -> None:
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("at", UTCDateTime()))
    table.metadata.create_all(engine)
    with engine.begin() as c:
        c.execute(insert(table), [{"at": v} for v in VALUES])
        c.execute(insert(table), [{"at": None}])
        read = c.scalars(select(table.c.at)).all()
        later = c.scalars(select(table.c.at).where(table.c.at > VALUES[2])).all()
    assert read == [*VALUES, None]
    assert all(v.tzinfo is UTC for v in read if v is not None)
    assert later == [VALUES[0]]  # a bound value compares in the stored text's order


def test_a_naive_datetime_is_refused() -> None:
    process = UTCDateTime().bind_processor(sqlite.dialect())
    with pytest.raises(ValueError, match="naive"):
        process(datetime(2026, 1, 1))
