"""The whole schema and contents of a database as plain data, to compare two databases:
the one the migrations built with the one created from the ORM metadata."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, MetaData, inspect, select


def _sorted(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=repr)


def schema_of(conn: Connection) -> dict[str, Any]:
    """Every table (``alembic_version`` included) with its columns (by name: their order
    is not compared), primary key, foreign keys, indexes, unique and check constraints;
    on PostgreSQL also the enum types and sequences."""
    insp = inspect(conn)
    tables: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        columns = {
            col["name"]: {
                "type": str(col["type"].compile(dialect=conn.dialect)),
                "nullable": col["nullable"],
                "default": col.get("default"),
            }
            for col in insp.get_columns(name)
        }
        pk = insp.get_pk_constraint(name)
        tables[name] = {
            "columns": columns,
            "primary_key": (pk.get("name"), pk["constrained_columns"]),
            "foreign_keys": _sorted(
                [
                    {
                        "name": fk.get("name"),
                        "columns": fk["constrained_columns"],
                        "table": fk["referred_table"],
                        "referred": fk["referred_columns"],
                        "options": fk.get("options", {}),
                    }
                    for fk in insp.get_foreign_keys(name)
                ]
            ),
            "indexes": _sorted(
                [
                    {
                        "name": ix["name"],
                        "columns": ix["column_names"],
                        "expressions": ix.get("expressions"),
                        "unique": bool(ix["unique"]),
                        "where": (ix.get("dialect_options") or {}).get(
                            f"{conn.dialect.name}_where"
                        ),
                    }
                    for ix in insp.get_indexes(name)
                ]
            ),
            "unique": _sorted(
                [
                    {"name": uq.get("name"), "columns": uq["column_names"]}
                    for uq in insp.get_unique_constraints(name)
                ]
            ),
            "checks": _sorted(
                [
                    {"name": ck.get("name"), "sql": ck["sqltext"]}
                    for ck in insp.get_check_constraints(name)
                ]
            ),
        }
    schema: dict[str, Any] = {"tables": tables}
    if conn.dialect.name == "postgresql":
        schema["enums"] = _sorted(insp.get_enums())  # type: ignore[attr-defined]
        schema["sequences"] = sorted(insp.get_sequence_names())
    return schema


def rows_of(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (what a migration may have inserted), sorted."""
    meta = MetaData()
    meta.reflect(conn)
    return {
        name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
        for name, table in sorted(meta.tables.items())
    }
