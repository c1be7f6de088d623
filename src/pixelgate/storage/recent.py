"""The bytes of the objects this process has just written, for the one read that follows.

A synchronous OpenAI-shaped answer carries its images as base64: the job stores each
image, and the request reads it back at once to encode it. Reading the file again cost
~110 µs of CPU per image (a hop to a thread, an open and a read; measured in process),
~5 % of such a request. The storage keeps what it wrote in a small memory, bounded in
bytes and in age, and the first read of a key takes it from there (and forgets it).

Only this process's writes are remembered and a delete forgets the key at once, so a
read never sees bytes other than the stored ones, except when another process deletes
or rewrites the key within ``max_age_s`` of this process writing it (local storage
shared by several processes): then a read here may still answer the bytes written here.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

__all__ = ["RecentWrites"]

#: in all; the oldest are forgotten first
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
#: larger objects are not kept (an answer's read of them goes to the storage)
DEFAULT_MAX_ITEM_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_AGE_S = 10.0


class RecentWrites:
    """Written objects by key, oldest first, until read, deleted, too old or crowded out.

    Thread-safe: writes happen in worker threads, reads on the event loop.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_item_bytes = max_item_bytes
        self.max_age_s = max_age_s
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """The bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: str, data: bytes) -> None:
        """Remember ``data`` as ``key``'s bytes (replacing what was held for it)."""
        with self._lock:
            self._forget(key)
            if len(data) > self.max_item_bytes:
                return
            self._items[key] = (data, time.monotonic() + self.max_age_s)
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, (old, _) = self._items.popitem(last=False)
                self._bytes -= len(old)

    def take(self, key: str) -> bytes | None:
        """``key``'s bytes if they were written here lately (then forgotten), else None."""
        with self._lock:
            held = self._items.pop(key, None)
            if held is None:
                return None
            data, expires = held
            self._bytes -= len(data)
            return data if time.monotonic() < expires else None

    def discard(self, key: str) -> None:
        """Forget ``key`` (it was deleted)."""
        with self._lock:
            self._forget(key)

    def _forget(self, key: str) -> None:
        held = self._items.pop(key, None)
        if held is not None:
            self._bytes -= len(held[0])
