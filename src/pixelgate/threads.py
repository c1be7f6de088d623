"""Threads that run blocking calls for the event loop, with a light hand-over.

``loop.run_in_executor`` over a ``ThreadPoolExecutor`` costs ~43 µs of CPU per call
here (a ``concurrent.futures.Future`` with its ``Condition``, the executor's work queue
and thread check, then an asyncio future chained to it through two callbacks), and about
as much again per call under load. A :class:`ThreadLane` hands a call to its threads
through one ``queue.SimpleQueue`` and hands the result back with one
``call_soon_threadsafe``: ~20 µs alone, ~3 µs when calls come together (measured with
``uvloop``, ``bench``-style, 1 and 64 callers). pixelgate makes two to four such hops
per job (the database thread, the CPU pool), so this is on every request's path; the
standard library has nothing lighter, and ``anyio.to_thread`` does not keep a call on
one given thread, which a SQLite connection needs.

Semantics are the executor's: calls run in order of arrival; a call whose awaiting
future was cancelled before a thread took it is skipped (one already running runs to
its end); an exception is raised to the awaiting caller.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, ParamSpec, TypeVar

__all__ = ["ThreadLane"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class ThreadLane:
    """``threads`` threads (started at the first call) running calls from a queue."""

    def __init__(self, name: str, threads: int = 1) -> None:
        self.name = name
        self.size = threads
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    async def call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn(*args, **kwargs)`` in one of the lane's threads and await its result."""
        if self._closed:
            raise RuntimeError(f"thread lane {self.name!r} is closed")
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._calls.put((loop, future, partial(fn, *args, **kwargs) if kwargs or args else fn))
        return await future

    def close(self, *, wait: bool = True) -> None:
        """Stop the threads once the calls already queued have run (``wait``: join them).

        ``wait=False`` cancels the calls no thread has taken yet instead.
        """
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        if not wait:
            while True:
                try:
                    item = self._calls.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    _hand_back(item[0], _cancel, item[1])
        for _ in threads:
            self._calls.put(None)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            for index in range(self.size):
                thread = threading.Thread(
                    target=self._serve, name=f"{self.name}_{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            loop, future, fn = item
            if future.cancelled():  # its caller stopped waiting before it started
                continue
            try:
                result = fn()
            except BaseException as exc:
                _hand_back(loop, _fail, future, exc)
            else:
                _hand_back(loop, _succeed, future, result)
            del item, future, fn  # no reference held while waiting for the next call


def _hand_back(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _cancel(future: asyncio.Future[Any]) -> None:
    future.cancel()
