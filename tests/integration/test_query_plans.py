"""Reads on the admission path stay cheap as the day's volume grows: SQLite answers them
from a covering index, without a row read per generation (migration 0005)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event

from pixelgate.db.billing import spent_today
from pixelgate.runtime import Runtime


async def test_todays_spend_reads_only_the_covering_index(
    sqlite_only: None, runtime: Runtime, make_account: Any
) -> None:
    caller, _ = await make_account("budgeted")
    now = runtime.store.clock()

    def plan(c: Connection) -> str:
        seen: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            seen.append((statement, params))

        event.listen(c, "before_cursor_execute", capture)
        try:
            spent_today(c, caller.account_id, now)
        finally:
            event.remove(c, "before_cursor_execute", capture)
        (statement, params), = seen
        rows = c.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
        return " | ".join(str(row[-1]) for row in rows)

    found = await runtime.db.run(plan)
    assert "COVERING INDEX ix_generations_account_spend" in found, found
