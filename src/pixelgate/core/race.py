"""Racing: run route candidates one at a time, ``k`` at once, or hedged (the next starts
when the running one has not answered after a delay); the first accepted result wins and
the others are cancelled. The route planner (:mod:`pixelgate.core.routing`) chooses the
candidates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Race", "RaceFailed"]

C = TypeVar("C")
T = TypeVar("T")
R = TypeVar("R")


class RaceFailed(Exception):
    """No candidate produced an accepted result."""

    def __init__(self, errors: list[tuple[Any, BaseException]], stopped_by: Any = None) -> None:
        super().__init__("every candidate failed")
        self.errors = errors
        #: the candidate whose failure stopped the route (a refusal), if any
        self.stopped_by = stopped_by


@dataclass
class _Started(Generic[C]):
    candidate: C
    how: str
    at: float


class Race(Generic[C, T, R]):
    """Run candidates until one result is accepted.

    Args:
        candidates: in order of preference.
        run: runs one candidate (retries included); raises when it fails.
        accept: turns a result into the final value, one at a time (so two winners
            never store images at once); raises to reject the result.
        parallel: candidates started at once (racing); in hedged mode, the most
            running at once.
        hedge_delay: hedged mode: seconds to wait on the newest running candidate
            before starting the next one.
        keep_going: False after a failure stops starting further candidates.
        errors: what counts as a candidate failing; anything else propagates.
    """

    def __init__(
        self,
        candidates: Sequence[C],
        *,
        run: Callable[[C, str], Awaitable[T]],
        accept: Callable[[C, T], Awaitable[R]],
        parallel: int = 1,
        hedge_delay: Callable[[C], float] | None = None,
        keep_going: Callable[[C, BaseException], bool] | None = None,
        errors: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self._queue = list(candidates)
        self._run = run
        self._accept = accept
        self.parallel = max(1, parallel)
        self._hedge_delay = hedge_delay
        self._keep_going = keep_going or (lambda c, e: True)
        self._errors = errors
        self.started: list[_Started[C]] = []
        self.failed: list[tuple[C, BaseException]] = []
        #: candidates that ran but lost: ``(candidate, result or None if cancelled)``
        self.lost: list[tuple[C, T | None]] = []
        self.not_tried: list[C] = []
        self.stopped_by: C | None = None
        self._tasks: dict[asyncio.Task[T], C] = {}

    def _start(self, how: str) -> None:
        candidate = self._queue.pop(0)
        loop = asyncio.get_running_loop()
        self.started.append(_Started(candidate, how, loop.time()))
        task = asyncio.ensure_future(self._run(candidate, how))
        self._tasks[task] = candidate

    async def run(self) -> tuple[C, R]:
        """The winning candidate and its accepted value; :class:`RaceFailed` if none."""
        hedged = self._hedge_delay is not None
        if not hedged and self.parallel == 1:
            return await self._one_at_a_time()
        try:
            first = 1 if hedged else self.parallel
            for i in range(min(first, len(self._queue))):
                self._start("first" if i == 0 else "race")
            loop = asyncio.get_running_loop()
            while self._tasks:
                timeout = None
                newest = self.started[-1]
                can_hedge = hedged and self._queue and len(self._tasks) < self.parallel
                if can_hedge and self._hedge_delay is not None:
                    due = newest.at + self._hedge_delay(newest.candidate)
                    timeout = max(0.0, due - loop.time())
                done, _ = await asyncio.wait(
                    list(self._tasks), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    self._start("hedge")
                    continue
                for task in self._ordered(done):
                    won = await self._settle(task)
                    if won is not None:
                        await self._cancel_rest()
                        return won
                    # one failed: its replacement starts now (hedging adds more over time)
                    if self._queue and len(self._tasks) < self.parallel and not self.stopped_by:
                        self._start("fallback")
            self.not_tried.extend(self._queue)
            self._queue.clear()
            raise RaceFailed(self.failed, self.stopped_by)
        except BaseException:
            await self._cancel_rest()
            raise

    async def _one_at_a_time(self) -> tuple[C, R]:
        """No racing, no hedging: each candidate runs in the caller's task (a task per
        candidate, and waiting on it, cost more than the rest of a quick provider's turn),
        the next one only after it failed. A cancelled caller cancels the running one."""
        loop = asyncio.get_running_loop()
        how = "first"
        while self._queue and self.stopped_by is None:
            candidate = self._queue.pop(0)
            self.started.append(_Started(candidate, how, loop.time()))
            how = "fallback"
            try:
                result = await self._run(candidate, self.started[-1].how)
                return candidate, await self._accept(candidate, result)
            except self._errors as exc:
                self._fail(candidate, exc)
        self.not_tried.extend(self._queue)
        self._queue.clear()
        raise RaceFailed(self.failed, self.stopped_by)

    def _ordered(self, done: set[asyncio.Task[T]]) -> list[asyncio.Task[T]]:
        # settle in start order so that ties go to the preferred candidate
        order = {id(s.candidate): i for i, s in enumerate(self.started)}
        return sorted(done, key=lambda t: order.get(id(self._tasks[t]), 0))

    async def _settle(self, task: asyncio.Task[T]) -> tuple[C, R] | None:
        candidate = self._tasks.pop(task)
        try:
            result = task.result()
        except asyncio.CancelledError:
            self.lost.append((candidate, None))
            return None
        except self._errors as exc:
            self._fail(candidate, exc)
            return None
        try:
            value = await self._accept(candidate, result)
        except self._errors as exc:
            self._fail(candidate, exc)
            return None
        return candidate, value

    def _fail(self, candidate: C, exc: BaseException) -> None:
        self.failed.append((candidate, exc))
        if self.stopped_by is None and not self._keep_going(candidate, exc):
            self.stopped_by = candidate

    async def _cancel_rest(self) -> None:
        """Cancel the running candidates; keep results that arrived meanwhile as lost."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            candidate = self._tasks.pop(task)
            result: T | None = None
            with contextlib.suppress(asyncio.CancelledError, Exception):
                result = await task
            self.lost.append((candidate, result))
        self.not_tried.extend(self._queue)
        self._queue.clear()
