"""Rows every writing part of the store adds: events and images (synchronous, in a
transaction function)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from pixelgate.core.ids import new_id
from pixelgate.db.prepared import Prepared
from pixelgate.db.records import EVT, IMG, RunningEvent
from pixelgate.db.setbased import insert_rows

__all__ = [
    "add_images",
    "event_row",
    "image_rows",
    "insert_events",
    "pending_values",
    "running_rows",
]

# Built once: a statement's construction costs more than its (cached) compilation.
_INSERT_EVENT = Prepared(insert(EVT))
_INSERT_IMAGE = Prepared(insert(IMG))


def event_row(
    gen_id: str, type_: str, data: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    return {"generation_id": gen_id, "type": type_, "data": data or {}, "created_at": now}


def insert_events(c: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Event rows (``event_row``) in one statement; ids follow the order given. On
    PostgreSQL several rows go in one parameter (an executemany's per-row parameter
    processing was most of a flush of running events, measured)."""
    if len(rows) > 1 and c.dialect.name == "postgresql":
        insert_rows(c, EVT, rows)
    elif rows:
        _INSERT_EVENT.run_many(c, rows)


def running_rows(events: Sequence[RunningEvent], now: datetime) -> list[dict[str, Any]]:
    return [event_row(e.generation_id, e.type, e.data, now) for e in events]


def pending_values(pending: Sequence[RunningEvent]) -> dict[str, Any]:
    """The generation columns a finishing job's waiting events set, later ones winning
    (the finishing update's own columns win over all of them)."""
    values: dict[str, Any] = {}
    for event in pending:
        values.update(event.values)
    return values


def add_images(
    c: Connection, gen_id: str, account_id: str, images: Sequence[Any], now: datetime
) -> list[dict[str, Any]]:
    """Image rows for a generation: new results (``NewImage``), or a cache hit's copies;
    the rows inserted."""
    if not images:
        return []
    rows = image_rows(gen_id, account_id, images, now)
    insert_images(c, rows)
    return rows


def insert_images(c: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Image rows (:func:`image_rows`, of one generation or several) in one statement."""
    if len(rows) > 1 and c.dialect.name == "postgresql":
        insert_rows(c, IMG, rows)
    elif rows:
        _INSERT_IMAGE.run_many(c, rows)


def image_rows(
    gen_id: str, account_id: str, images: Sequence[Any], now: datetime
) -> list[dict[str, Any]]:
    """The rows of :func:`add_images`, not inserted."""
    return [
        {
            "id": new_id("img"),
            "generation_id": gen_id,
            "account_id": account_id,
            "index": img.index,
            "key": img.key,
            "width": img.width,
            "height": img.height,
            "format": img.format,
            "content_type": img.content_type,
            "bytes": img.bytes,
            "sha256": img.sha256,
            "attribution": img.attribution,
            "created_at": now,
            "approval": "pending",
            "approval_updated_at": None,
        }
        for img in images
    ]
