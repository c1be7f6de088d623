"""Set-based statements on PostgreSQL: a group commit's successful finishes share one
UPDATE and one INSERT per table, write what a lone finish writes, and a job whose rows
fail still fails alone; a flush of running events is one UPDATE and one INSERT, not
an executemany of a row each."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from pixelgate.core.records import RunningEvent
from pixelgate.runtime import Runtime
from tests.finishes import finish, new_image, running, statements
from tests.scaleout.services import PgDatabase

ADMIN = "pg_setbased_test_admin_key_012345"
JOBS = 12


@pytest.fixture
async def rt(pg_runtime: Callable[..., Awaitable[Runtime]]) -> Runtime:
    return await pg_runtime(admin_key=ADMIN, prefix="sbtest", lease_seconds=30)


def _stored(pg: PgDatabase, gen_id: str) -> dict[str, Any]:
    """What a finish left for one job (not its ids and times)."""
    [gen] = pg.query(
        "SELECT status, progress, provider, model, cost_usd, provider_ms, route::text, "
        "fallback_image, lease_owner, lease_expires_at, completed_at IS NOT NULL, "
        "started_at IS NOT NULL, updated_at = completed_at FROM generations WHERE id = %s",
        gen_id,
    )
    images = pg.query(
        "SELECT index, key, width, height, format, content_type, bytes, sha256, "
        "attribution::text, approval, approval_updated_at FROM images "
        "WHERE generation_id = %s ORDER BY index",
        gen_id,
    )
    events = pg.query(
        "SELECT type, data::text FROM events WHERE generation_id = %s "
        "AND type NOT IN ('queued', 'started') ORDER BY id",
        gen_id,
    )
    return {"generation": gen, "images": images, "events": events}


async def test_the_finishes_of_one_group_commit_share_their_statements(
    rt: Runtime, pg: PgDatabase
) -> None:
    lone, *jobs = await running(rt, JOBS + 1)
    alone = await finish(rt, lone)  # a batch of one: the statements of one job
    with statements() as said:
        views = await asyncio.gather(*(finish(rt, job) for job in jobs))
    assert [v.status.value for v in views] == ["SUCCEEDED"] * JOBS
    assert [[i.key for i in v.images] for v in views] == [[f"k/{j.id}-0.png"] for j in jobs]
    assert said.count("UPDATE GENERATIONS SET") == 1, said
    assert sorted(s for s in said if s.startswith("INSERT")) == [
        "INSERT INTO EVENTS",
        "INSERT INTO IMAGES",
        "INSERT INTO USAGE_DAILY",
    ], said
    # each job stored what the lone finish stored, its view included
    expected = _stored(pg, lone.id)
    assert [type_ for type_, _ in expected["events"]] == ["progress", "succeeded"]
    for job, view in zip(jobs, views, strict=True):
        assert _stored(pg, job.id) == {**expected, "images": _keyed(expected["images"], job.id)}
        assert _shown(view) == _shown(alone)
    [(succeeded, images, latency, usd)] = pg.query(
        "SELECT sum(succeeded), sum(images), sum(latency_ms_total), sum(usd) FROM usage_daily"
    )
    assert (succeeded, images, latency) == (JOBS + 1, JOBS + 1, 7 * (JOBS + 1))
    assert usd == Decimal("0.012345") * (JOBS + 1)


#: what differs between two jobs' views
_OWN = {"id", "prompt", "request", "created_at", "updated_at", "started_at", "completed_at"}


def _shown(view: Any) -> dict[str, Any]:
    shown = {k: v for k, v in dataclasses.asdict(view).items() if k not in _OWN}
    shown["images"] = [
        {k: v for k, v in i.items() if k not in {"id", "key", "url"}} for i in shown["images"]
    ]
    return shown


def _keyed(images: list[tuple[Any, ...]], gen_id: str) -> list[tuple[Any, ...]]:
    return [(i[0], f"k/{gen_id}-{i[0]}.png", *i[2:]) for i in images]


async def test_a_job_whose_rows_fail_in_a_set_based_finish_fails_alone(
    rt: Runtime, pg: PgDatabase
) -> None:
    """Two images with one index break the images' unique key: the batch's statements
    fail, each finish runs again alone, and only that job's finish raises."""
    jobs = await running(rt, 5)
    broken = jobs[2]
    twice = [new_image(broken.id), new_image(broken.id)]
    results = await asyncio.gather(
        *(finish(rt, job, images=twice if job is broken else [new_image(job.id)]) for job in jobs),
        return_exceptions=True,
    )
    assert "uq_images_generation_id" in str(results[2]) or "unique" in str(results[2]).lower()
    others = [r for i, r in enumerate(results) if i != 2]
    assert [r.status.value for r in others] == ["SUCCEEDED"] * 4
    # the broken job's finish left nothing: still running, no image, no final event
    assert pg.query("SELECT status FROM generations WHERE id = %s", broken.id) == [("PROCESSING",)]
    assert pg.query("SELECT count(*) FROM images WHERE generation_id = %s", broken.id) == [(0,)]
    [(succeeded,)] = pg.query("SELECT sum(succeeded) FROM usage_daily")
    assert succeeded == 4
    assert pg.query("SELECT count(*) FROM events WHERE type = 'succeeded'") == [(4,)]


async def test_a_set_based_finish_answers_none_for_a_job_it_does_not_own_and_keeps_the_rest(
    rt: Runtime, pg: PgDatabase
) -> None:
    """In one batch: a job another worker holds (nothing changes, ``None``), a
    redelivered job (its earlier run's images are replaced) and plain ones."""
    jobs = await running(rt, 4)
    stolen, redelivered = jobs[0], jobs[1]
    pg.query("UPDATE generations SET lease_owner = 'w2' WHERE id = %s RETURNING id", stolen.id)
    pg.query("UPDATE generations SET deliveries = 2 WHERE id = %s RETURNING id", redelivered.id)
    pg.query(
        "INSERT INTO images (id, generation_id, account_id, index, key, width, height, format, "
        "content_type, bytes, sha256, created_at, approval) SELECT 'img_old', id, account_id, "
        "0, 'old', 1, 1, 'png', 'image/png', 1, 'x', now(), 'pending' FROM generations "
        "WHERE id = %s RETURNING id",
        redelivered.id,
    )
    views = await asyncio.gather(*(finish(rt, job) for job in jobs))
    assert views[0] is None
    assert [v.status.value for v in views[1:]] == ["SUCCEEDED"] * 3
    assert pg.query("SELECT status, lease_owner FROM generations WHERE id = %s", stolen.id) == [
        ("PROCESSING", "w2")
    ]
    assert pg.query("SELECT key FROM images WHERE generation_id = %s", redelivered.id) == [
        (f"k/{redelivered.id}-0.png",)
    ]
    [(succeeded,)] = pg.query("SELECT sum(succeeded) FROM usage_daily")
    assert succeeded == 3


async def test_a_flush_of_running_events_is_one_update_and_one_insert(
    rt: Runtime, pg: PgDatabase
) -> None:
    jobs = await running(rt, 6)
    gone = jobs[0]
    await finish(rt, gone)  # no longer held: its late events are dropped
    events = [
        RunningEvent(job.id, "progress", {"progress": pct}, {"progress": pct})
        for pct in (10, 20)
        for job in jobs
    ]
    events.append(RunningEvent(jobs[1].id, "note", {"n": 1}, {"provider": "p", "model": "m"}))
    with statements() as said:
        added = await rt.store.add_running_events(events)
    assert gone.id not in added and len(added) == len(events) - 2
    writes = [s for s in said if s.startswith(("UPDATE", "INSERT"))]
    assert sorted(writes) == [
        "INSERT INTO EVENTS",
        "UPDATE GENERATIONS SET",
        "UPDATE GENERATIONS SET",
    ], said
    for job in jobs[1:]:
        stored = pg.query(
            "SELECT type, data::text FROM events WHERE generation_id = %s "
            "AND type IN ('progress', 'note') ORDER BY id",
            job.id,
        )
        expected = [("progress", '{"progress":10}'), ("progress", '{"progress":20}')]
        if job is jobs[1]:
            expected.append(("note", '{"n":1}'))
        assert stored == expected
        assert pg.query(
            "SELECT progress, updated_at >= started_at FROM generations WHERE id = %s", job.id
        ) == [(20, True)]
    assert pg.query("SELECT provider, model FROM generations WHERE id = %s", jobs[1].id) == [
        ("p", "m")
    ]
    assert pg.query("SELECT progress FROM generations WHERE id = %s", gone.id) == [(100,)]
