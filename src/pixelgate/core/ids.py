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
_lock = threading.Lock()
_last = (0, 0)


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
    ms, rand = _next()
    value = (ms << _RANDOM_BITS) | rand
    chars = [_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(_CHARS))]
    return f"{prefix}_{''.join(chars)}"
