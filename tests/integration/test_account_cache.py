"""The account cache admission and planning read: thousands of jobs that miss it at the
same moment share one database read, and a change made meanwhile is never hidden by a
read that started before it."""

from __future__ import annotations

import asyncio
from typing import Any

from pixelgate.core.models import AccountView
from pixelgate.runtime import Runtime


def _counting(
    runtime: Runtime,
    reads: list[str],
    gate: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
) -> Any:
    original = runtime.store.get_account

    async def get_account(account_id: str) -> AccountView:
        reads.append(account_id)
        view = await original(account_id)
        if started is not None:
            started.set()
        if gate is not None:
            await gate.wait()
        return view

    return get_account


async def test_concurrent_misses_share_one_read(runtime: Runtime, make_account: Any) -> None:
    caller, _ = await make_account("crowd")
    store = runtime.store
    reads: list[str] = []
    store.get_account = _counting(runtime, reads)  # type: ignore[method-assign]
    views = await asyncio.gather(
        *(store.get_account_cached(caller.account_id) for _ in range(200))
    )
    assert reads == [caller.account_id]
    assert {v.id for v in views} == {caller.account_id}
    await store.get_account_cached(caller.account_id)  # a hit now: no read
    assert len(reads) == 1


async def test_a_change_during_a_read_is_not_hidden_by_it(
    runtime: Runtime, make_account: Any
) -> None:
    caller, _ = await make_account("changing", tier="FREE")
    store = runtime.store
    original = store.get_account
    reads: list[str] = []
    gate, started = asyncio.Event(), asyncio.Event()
    store.get_account = _counting(runtime, reads, gate, started)  # type: ignore[method-assign]
    before = asyncio.create_task(store.get_account_cached(caller.account_id))
    await started.wait()
    store.get_account = original  # type: ignore[method-assign]
    await store.update_account(caller.account_id, tier="PRO")
    gate.set()
    assert (await before).tier == "FREE"  # what it read, before the change
    assert (await store.get_account_cached(caller.account_id)).tier == "PRO"


async def test_a_failed_read_reaches_every_caller_and_is_not_cached(
    runtime: Runtime, make_account: Any
) -> None:
    store = runtime.store
    answers = await asyncio.gather(
        *(store.get_account_cached("acct_missing") for _ in range(3)), return_exceptions=True
    )
    assert all(type(a).__name__ == "NotFound" for a in answers)
    assert "acct_missing" not in store._account_cache
