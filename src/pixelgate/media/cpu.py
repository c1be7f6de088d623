"""One process-wide thread pool for CPU work (decode, encode, hashing, rendering).

Pillow and hashlib release the GIL for most of their work, so threads sized to the
cores keep the event loop free without the cost of process pools.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["cpu_pool", "run_cpu", "shutdown_cpu_pool"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def cpu_pool() -> ThreadPoolExecutor:
    """The shared pool, created on first use with one thread per core."""
    global _pool
    pool = _pool
    if pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=os.cpu_count() or 1, thread_name_prefix="pixelgate-cpu"
                )
            pool = _pool
    return pool


async def run_cpu(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run ``fn(*args, **kwargs)`` in the CPU pool and await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(cpu_pool(), functools.partial(fn, *args, **kwargs))


def shutdown_cpu_pool(*, wait: bool = True) -> None:
    """Shut the pool down (app shutdown); the next :func:`run_cpu` makes a new one."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=not wait)
