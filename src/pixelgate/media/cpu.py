"""One process-wide thread pool for CPU work (decode, encode, hashing, rendering).

Pillow and hashlib release the GIL for most of their work, so threads sized to the
cores keep the event loop free without the cost of process pools.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pixelgate.threads import ThreadLane

__all__ = ["InlineWork", "b64encode_text", "cpu_pool", "run_cpu", "shutdown_cpu_pool"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_pool: ThreadLane | None = None
_lock = threading.Lock()


def cpu_pool() -> ThreadLane:
    """The shared pool, created on first use with one thread per core."""
    global _pool
    pool = _pool
    if pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadLane("pixelgate-cpu", threads=os.cpu_count() or 1)
            pool = _pool
    return pool


async def run_cpu(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run ``fn(*args, **kwargs)`` in the CPU pool and await its result."""
    return await cpu_pool().call(fn, *args, **kwargs)


def shutdown_cpu_pool(*, wait: bool = True) -> None:
    """Shut the pool down (app shutdown); the next :func:`run_cpu` makes a new one."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close(wait=wait)


class InlineWork:
    """Small blocking I/O run on the event loop itself, while it stays quick.

    Handing a call to the pool and back costs the loop a wake-up and the GIL's hand-over
    each way, more than writing a small file does (~30 µs). A call that took longer
    than ``slow_s`` (a disk that stalls) makes :meth:`allowed` answer ``False`` for
    ``pause_s``: the work goes to the pool meanwhile, so a slow disk holds the loop up
    once per pause at most. ``slow_s`` is wall time, which includes getting the GIL
    back after the system call (up to the 5 ms switch interval per other thread): it is
    set well above that.
    """

    def __init__(self, *, slow_s: float = 0.025, pause_s: float = 30.0) -> None:
        self.slow_s = slow_s
        self.pause_s = pause_s
        self._paused_until = 0.0

    def allowed(self) -> bool:
        return self._paused_until == 0.0 or time.monotonic() >= self._paused_until

    def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args, **kwargs)`` here and now, timed."""
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if time.perf_counter() - started > self.slow_s:
                self._paused_until = time.monotonic() + self.pause_s


#: bytes base64-encoded between two returns to the event loop (a multiple of 3, ~1 ms)
B64_CHUNK = 3 * 256 * 1024


async def b64encode_text(data: bytes) -> str:
    """``base64.b64encode(data)`` as text, returning to the event loop between chunks.

    binascii holds the GIL for a whole call, so a thread would not free the loop during
    a 50 MiB image; chunks aligned to 3 bytes concatenate to the same encoding.
    """
    if len(data) <= B64_CHUNK:
        return base64.b64encode(data).decode("ascii")
    view = memoryview(data)
    parts: list[bytes] = []
    for start in range(0, len(data), B64_CHUNK):
        parts.append(base64.b64encode(view[start : start + B64_CHUNK]))
        await asyncio.sleep(0)
    return b"".join(parts).decode("ascii")
