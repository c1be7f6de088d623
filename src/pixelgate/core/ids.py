"""Prefixed, time-sortable identifiers (``gen_…``, ``img_…``, ``acct_…``, ``req_…``)."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id"]

_RANDOM_BITS = 80
# Crockford's base32: its digits sort in ASCII order, so string order is time order
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_CHARS = 26
_TIME_CHARS = _CHARS - _RANDOM_BITS // 5
#: two chars for each 10 bits
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_lock = threading.Lock()
_last = (0, 0)
_time_text = (-1, "")
#: the operating system's random bytes, fetched 4 KiB at a time: ``os.urandom`` gives
#: up the GIL for its system call, and under load each such call cost the event loop
#: ~50 µs of waiting for it back (cProfile, OpenAI route)
_POOL_BYTES = 4096
_pool = b""
_pool_at = 0


def _random_bits() -> int:
    """80 random bits from the pool (called with ``_lock`` held)."""
    global _pool, _pool_at
    end = _pool_at + _RANDOM_BITS // 8
    if end > len(_pool):
        _pool, _pool_at, end = os.urandom(_POOL_BYTES), 0, _RANDOM_BITS // 8
    bits = int.from_bytes(_pool[_pool_at:end], "big")
    _pool_at = end
    return bits


def _forget_pool() -> None:
    """A forked child draws its own bytes: the parent's pool would repeat its ids."""
    global _pool, _pool_at, _last
    _pool, _pool_at, _last = b"", 0, (0, 0)


os.register_at_fork(after_in_child=_forget_pool)


def _next() -> tuple[int, int]:
    global _last
    ms = int(time.time() * 1000)
    with _lock:
        last_ms, last_rand = _last
        if ms <= last_ms:
            # same millisecond (or a clock step back): stay monotonic, like ULID
            ms, rand = last_ms, (last_rand + 1) % (1 << _RANDOM_BITS)
        else:
            rand = _random_bits() >> 1
        _last = (ms, rand)
    return ms, rand


def new_id(prefix: str) -> str:
    """``prefix_`` + 26 base32 chars: 48-bit milliseconds then 80 random bits.

    Ids made by one process increase strictly, so ids sort by creation time, which
    cursor pagination relies on.
    """
    global _time_text
    ms, rand = _next()
    # the first 10 chars spell the millisecond (kept while it lasts), the last 16 the
    # 80 random bits, two chars per 10 bits (7 → 3 µs an id, measured)
    at, head = _time_text
    if at != ms:
        head = "".join(_ALPHABET[(ms >> (5 * i)) & 31] for i in reversed(range(_TIME_CHARS)))
        _time_text = (ms, head)
    high, low = rand >> 40, rand & 0xFFFFFFFFFF  # two small ints: cheaper shifts
    pairs = _PAIRS
    return (
        f"{prefix}_{head}{pairs[high >> 30]}{pairs[high >> 20 & 1023]}"
        f"{pairs[high >> 10 & 1023]}{pairs[high & 1023]}{pairs[low >> 30]}"
        f"{pairs[low >> 20 & 1023]}{pairs[low >> 10 & 1023]}{pairs[low & 1023]}"
    )
