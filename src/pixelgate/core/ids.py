"""Prefixed, time-sortable identifiers (``gen_…``, ``img_…``, ``acct_…``, ``req_…``)."""

from __future__ import annotations

import base64
import os
import time

__all__ = ["new_id"]


def new_id(prefix: str) -> str:
    """``prefix_`` + 26 base32 chars: 48-bit milliseconds then 80 random bits.

    Ids of one prefix sort by creation time, which cursor pagination relies on.
    """
    raw = int(time.time() * 1000).to_bytes(6, "big") + os.urandom(10)
    return f"{prefix}_{base64.b32encode(raw).decode().rstrip('=').lower()}"
