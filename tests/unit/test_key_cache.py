"""The API key cache: callers that miss at the same moment share one lookup."""

from __future__ import annotations

import asyncio

import pytest

from pixelgate.api.deps import KeyCache
from pixelgate.core.pipeline import Caller

ALICE = Caller(account_id="acc_1", account_name="alice", key_id="key_1")


class Lookups:
    """A key lookup that takes a moment, counted."""

    def __init__(self, answer: Caller | None = ALICE, error: Exception | None = None) -> None:
        self.answer = answer
        self.error = error
        self.calls = 0

    async def __call__(self) -> Caller | None:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        return self.answer


async def test_callers_that_miss_together_share_one_lookup_then_hit() -> None:
    cache, lookup = KeyCache(), Lookups()
    callers = await asyncio.gather(*(cache.load("h", lookup) for _ in range(200)))
    assert lookup.calls == 1
    assert all(c is ALICE for c in callers)
    assert cache.get("h") == (True, ALICE)


async def test_a_cancelled_waiter_leaves_the_lookup_to_the_others() -> None:
    cache, lookup = KeyCache(), Lookups()
    first = asyncio.ensure_future(cache.load("h", lookup))
    second = asyncio.ensure_future(cache.load("h", lookup))
    await asyncio.sleep(0)
    first.cancel()
    assert await second is ALICE
    assert first.cancelled() and lookup.calls == 1


async def test_a_failed_lookup_fails_its_waiters_and_the_next_miss_looks_again() -> None:
    cache, failing = KeyCache(), Lookups(error=OSError("database down"))
    results = await asyncio.gather(
        *(cache.load("h", failing) for _ in range(5)), return_exceptions=True
    )
    assert failing.calls == 1 and all(isinstance(r, OSError) for r in results)
    assert cache.get("h") == (False, None)
    assert await cache.load("h", Lookups()) is ALICE


@pytest.mark.parametrize("forget", ["drop", "clear"])
async def test_a_key_dropped_during_its_lookup_is_not_cached(forget: str) -> None:
    cache, lookup = KeyCache(), Lookups()
    pending = asyncio.ensure_future(cache.load("h", lookup))
    await asyncio.sleep(0)
    cache.drop("h") if forget == "drop" else cache.clear()
    assert await pending is ALICE  # read before the revocation: answered, not kept
    assert cache.get("h") == (False, None)
    await cache.load("h", lookup)
    assert lookup.calls == 2
