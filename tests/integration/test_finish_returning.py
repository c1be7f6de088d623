"""A successful finish that is given the job's request does not read the request and the
route back (decoding those JSON columns was most of the finishing ``UPDATE … RETURNING``),
and answers the very view a read of the finished generation gives: alone and in a group
commit, on SQLite and (``--backend scaleout``) PostgreSQL's set-based form."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import pytest

from pixelgate.config import Settings
from pixelgate.runtime import Runtime
from tests.finishes import finish, running, statements

JOBS = 6


@pytest.fixture
async def rt(make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    """A runtime whose worker is not started: the test plays the worker ``w1``."""
    runtime = await Runtime.open(make_settings(providers={"fast": {"kind": "placeholder"}}))
    try:
        yield runtime
    finally:
        await runtime.close()


@contextmanager
def returned_columns() -> Iterator[list[str]]:
    """The RETURNING clause of each finishing UPDATE of generations run meanwhile."""
    with statements(whole=True) as said:
        clauses: list[str] = []
        yield clauses
    for flat in said:
        upper = flat.upper()
        if upper.startswith("UPDATE GENERATIONS") and "RETURNING" in upper:
            clauses.append(flat[upper.rindex("RETURNING") :])


def _reads(clause: str, column: str) -> bool:
    return any(part.strip().split(".")[-1].strip('"') == column for part in clause[9:].split(","))


@pytest.mark.parametrize("together", [1, JOBS], ids=["alone", "group-commit"])
async def test_a_finish_given_the_request_answers_what_a_read_gives(
    rt: Runtime, together: int
) -> None:
    jobs = await running(rt, together)
    with returned_columns() as clauses:
        views = await asyncio.gather(
            *(finish(rt, j, request=j.request, account_name=j.account_name) for j in jobs)
        )
    assert clauses and all(_reads(c, "status") for c in clauses)
    assert not any(_reads(c, "request") or _reads(c, "route") for c in clauses)
    for job, view in zip(jobs, views, strict=True):
        read = await rt.store.get_generation(job.id)
        assert view == read
        assert view.request == job.request and view.route == [{"provider": "fast", "attempts": 1}]


async def test_a_finish_without_the_request_reads_it_back(rt: Runtime) -> None:
    [job] = await running(rt, 1)
    with returned_columns() as clauses:
        view = await finish(rt, job, account_name=job.account_name)
    assert clauses and all(_reads(c, "request") for c in clauses)
    assert view == await rt.store.get_generation(job.id)
