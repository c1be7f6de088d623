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


def _next() -> tuple[int, int]:
    global _last
    ms = int(time.time() * 1000)
    with _lock:
        last_ms, last_rand = _last
        if ms <= last_ms:
            # same millisecond (or a clock step back): stay monotonic, like ULID
            ms, rand = last_ms, (last_rand + 1) % (1 << _RANDOM_BITS)
        else:
            rand = int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big") >> 1
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
