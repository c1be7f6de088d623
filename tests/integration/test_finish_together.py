"""Successful finishes of one group commit on SQLite share their inserts: one
executemany each for the images, usage and events of all of them (an UPDATE per job
stays), write what a lone finish writes, and a job whose rows fail still fails alone.
(PostgreSQL's set-based form, one UPDATE for all, is tests/scaleout/test_set_based_finish.py.)
A flush of running events runs the same prepared statements whatever its number of jobs."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from decimal import Decimal
from typing import Any

import pytest

from pixelgate.config import Settings
from pixelgate.core.records import RunningEvent
from pixelgate.datadir import sqlite_path
from pixelgate.runtime import Runtime
from tests.finishes import finish, new_image, running, statements

JOBS = 12


@pytest.fixture
async def rt(sqlite_only: None, make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    """A runtime whose worker is not started: the test plays the worker ``w1``."""
    runtime = await Runtime.open(make_settings(providers={"fast": {"kind": "placeholder"}}))
    try:
        yield runtime
    finally:
        await runtime.close()


def connect(rt: Runtime) -> sqlite3.Connection:
    """The database file straight through sqlite3 (WAL: it sees what committed)."""
    path = sqlite_path(rt.settings.resolved_database_url)
    assert path is not None
    return sqlite3.connect(path)


def query(rt: Runtime, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(connect(rt)) as db:
        return db.execute(sql, params).fetchall()


def _stored(rt: Runtime, gen_id: str) -> dict[str, Any]:
    """What a finish left for one job (not its ids and times)."""
    [gen] = query(
        rt,
        "SELECT status, progress, provider, model, cost_usd, provider_ms, route, "
        "fallback_image, lease_owner, lease_expires_at, completed_at IS NOT NULL, "
        "started_at IS NOT NULL, updated_at = completed_at FROM generations WHERE id = ?",
        gen_id,
    )
    images = query(
        rt,
        'SELECT "index", width, height, format, content_type, bytes, sha256, attribution, '
        'approval FROM images WHERE generation_id = ? ORDER BY "index"',
        gen_id,
    )
    events = query(
        rt,
        "SELECT type, data FROM events WHERE generation_id = ? "
        "AND type NOT IN ('queued', 'started') ORDER BY id",
        gen_id,
    )
    return {"generation": gen, "images": images, "events": events}


async def test_the_finishes_of_one_group_commit_share_their_inserts(rt: Runtime) -> None:
    lone, *jobs = await running(rt, JOBS + 1)
    alone = await finish(rt, lone)  # a batch of one: the statements of one job
    with statements() as said:
        views = await asyncio.gather(*(finish(rt, job) for job in jobs))
    assert [v.status.value for v in views] == ["SUCCEEDED"] * JOBS
    assert [[i.key for i in v.images] for v in views] == [[f"k/{j.id}-0.png"] for j in jobs]
    assert said.count("UPDATE GENERATIONS SET") == JOBS, said
    # one executemany per table for the twelve jobs, not one statement each
    assert sorted(s for s in said if s.startswith("INSERT")) == [
        "INSERT INTO EVENTS (MANY)",
        "INSERT INTO IMAGES (MANY)",
        "INSERT INTO USAGE_DAILY (MANY)",
    ], said
    expected = _stored(rt, lone.id)
    assert [type_ for type_, _ in expected["events"]] == ["progress", "succeeded"]
    for job, view in zip(jobs, views, strict=True):
        assert _stored(rt, job.id) == expected
        assert view.images[0].width == alone.images[0].width
        assert (view.status, view.provider, view.cost_usd) == (
            alone.status,
            alone.provider,
            alone.cost_usd,
        )
    [(succeeded, images, latency, usd)] = query(
        rt, "SELECT sum(succeeded), sum(images), sum(latency_ms_total), sum(usd) FROM usage_daily"
    )
    assert (succeeded, images, latency) == (JOBS + 1, JOBS + 1, 7 * (JOBS + 1))
    assert Decimal(str(usd)) == Decimal("0.012345") * (JOBS + 1)


async def test_a_job_whose_rows_fail_in_a_shared_finish_fails_alone(rt: Runtime) -> None:
    """Two images with one index break the images' unique key: the batch's statements
    fail, each finish runs again alone, and only that job's finish raises."""
    jobs = await running(rt, 5)
    broken = jobs[2]
    twice = [new_image(broken.id), new_image(broken.id)]
    results = await asyncio.gather(
        *(finish(rt, job, images=twice if job is broken else [new_image(job.id)]) for job in jobs),
        return_exceptions=True,
    )
    assert "unique" in str(results[2]).lower()
    others = [r for i, r in enumerate(results) if i != 2]
    assert [r.status.value for r in others] == ["SUCCEEDED"] * 4
    # the broken job's finish left nothing: still running, no image, no final event
    assert query(rt, "SELECT status FROM generations WHERE id = ?", broken.id) == [("PROCESSING",)]
    assert query(rt, "SELECT count(*) FROM images WHERE generation_id = ?", broken.id) == [(0,)]
    assert query(rt, "SELECT sum(succeeded) FROM usage_daily") == [(4,)]
    assert query(rt, "SELECT count(*) FROM events WHERE type = 'succeeded'") == [(4,)]


async def test_a_shared_finish_answers_none_for_a_job_it_does_not_own_and_keeps_the_rest(
    rt: Runtime,
) -> None:
    """In one batch: a job another worker holds (nothing changes, ``None``), a
    redelivered job (its earlier run's images are replaced) and plain ones."""
    jobs = await running(rt, 4)
    stolen, redelivered = jobs[0], jobs[1]
    with closing(connect(rt)) as db, db:
        db.execute("UPDATE generations SET lease_owner = 'w2' WHERE id = ?", (stolen.id,))
        db.execute("UPDATE generations SET deliveries = 2 WHERE id = ?", (redelivered.id,))
        db.execute(
            'INSERT INTO images (id, generation_id, account_id, "index", key, width, height, '
            "format, content_type, bytes, sha256, created_at, approval) SELECT 'img_old', id, "
            "account_id, 0, 'old', 1, 1, 'png', 'image/png', 1, 'x', created_at, 'pending' "
            "FROM generations WHERE id = ?",
            (redelivered.id,),
        )
    views = await asyncio.gather(*(finish(rt, job) for job in jobs))
    assert views[0] is None
    assert [v.status.value for v in views[1:]] == ["SUCCEEDED"] * 3
    assert query(rt, "SELECT status, lease_owner FROM generations WHERE id = ?", stolen.id) == [
        ("PROCESSING", "w2")
    ]
    assert query(rt, "SELECT key FROM images WHERE generation_id = ?", redelivered.id) == [
        (f"k/{redelivered.id}-0.png",)
    ]
    assert query(rt, "SELECT sum(succeeded) FROM usage_daily") == [(3,)]


async def test_a_flush_of_running_events_runs_the_same_statements_whatever_its_jobs(
    rt: Runtime,
) -> None:
    """Running events on SQLite: the held rows are found with one JSON parameter (not an
    ``IN`` list as long as the flush), and each set of columns is one prepared
    executemany, so a flush of 2 jobs and one of 6 run the very same SQL."""
    jobs = await running(rt, 6)
    gone = jobs[0]
    await finish(rt, gone)  # no longer held: its late events are dropped

    def progress(pct: int, among: list[Any]) -> list[RunningEvent]:
        return [RunningEvent(j.id, "progress", {"progress": pct}, {"progress": pct}) for j in among]

    with statements(whole=True) as few:
        assert await rt.store.add_running_events(progress(10, jobs[1:3])) == [
            jobs[1].id,
            jobs[2].id,
        ]
    with statements(whole=True) as many:
        events = progress(20, jobs)
        events.append(RunningEvent(jobs[1].id, "note", {"n": 1}, {"provider": "p", "model": "m"}))
        added = await rt.store.add_running_events(events)
    assert added == [e.generation_id for e in events if e.generation_id != gone.id]
    assert few == [s for s in many if "provider" not in s]
    assert len([s for s in many if "provider" in s]) == 1  # the other set of columns
    assert "json_each" in few[0]
    rows = query(rt, "SELECT id, progress, provider FROM generations ORDER BY id")
    assert rows[0] == (gone.id, 100, "fast")
    assert rows[1] == (jobs[1].id, 20, "p")
    assert [r[1] for r in rows[2:]] == [20] * 4
