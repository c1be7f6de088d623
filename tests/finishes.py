"""Helpers of the group-commit tests (SQLite and PostgreSQL): the statements a block
runs, jobs claimed by a worker, and its successful finish of one with a stored image."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, event

from pixelgate.core.models import GenerationRequest
from pixelgate.core.records import NewImage, RunningEvent
from pixelgate.runtime import Runtime


@contextmanager
def statements(*, whole: bool = False) -> Iterator[list[str]]:
    """The first three words of each statement run meanwhile (``(MANY)``: an executemany);
    with ``whole``, each statement whole, on one line."""
    said: list[str] = []

    def on_statement(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if whole:
            said.append(" ".join(statement.split()))
            return
        said.append(" ".join(statement.split()[:3]).upper() + (" (MANY)" if many else ""))

    event.listen(Engine, "before_cursor_execute", on_statement)
    try:
        yield said
    finally:
        event.remove(Engine, "before_cursor_execute", on_statement)


async def running(rt: Runtime, n: int) -> list[Any]:
    """``n`` jobs admitted and claimed by the worker ``w1``, in id order."""
    caller = await rt.local_caller()
    for i in range(n):
        await rt.pipeline.admit(caller, GenerationRequest(prompt=f"s{i}"))
    jobs = await rt.store.claim("w1", 30, n)
    assert len(jobs) == n
    return sorted(jobs, key=lambda job: job.id)


def new_image(gen_id: str, index: int = 0, attribution: dict[str, Any] | None = None) -> NewImage:
    """A stored 64x64 PNG of ``gen_id`` (its key names both)."""
    return NewImage(
        index=index,
        key=f"k/{gen_id}-{index}.png",
        width=64,
        height=64,
        format="png",
        content_type="image/png",
        bytes=100 + index,
        sha256="0" * 64,
        attribution=attribution,
    )


def finish(rt: Runtime, job: Any, owner: str = "w1", **changes: Any) -> Any:
    """``finish_succeeded`` of ``job`` by ``owner``: one image, a price, a waiting event."""
    options: dict[str, Any] = {
        "provider": "fast",
        "model": "placeholder-1",
        "images": [new_image(job.id)],
        "cost_usd": Decimal("0.012345"),
        "provider_ms": 7,
        "route": [{"provider": "fast", "attempts": 1}],
        "account_id": job.account_id,
        "pending": [RunningEvent(job.id, "progress", {"progress": 50}, {"progress": 50})],
    }
    return rt.store.finish_succeeded(job.id, owner, **(options | changes))
