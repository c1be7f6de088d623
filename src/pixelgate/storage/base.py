"""The storage interface (local disk now, S3-compatible later) and the key layout."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from pixelgate.errors import StorageError

__all__ = [
    "CACHE_CONTROL",
    "PARTIALS",
    "BlockingWrites",
    "Storage",
    "StorageStats",
    "StoredObject",
    "image_key",
    "partial_key",
    "validate_key",
]

CACHE_CONTROL = "public, max-age=31536000, immutable"
#: the folder (under the prefix) of partial images, apart from results
PARTIALS = "partials"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class StoredObject:
    key: str
    data: bytes
    content_type: str


@dataclass(frozen=True)
class StorageStats:
    objects: int
    bytes: int
    backend: str


class Storage(Protocol):
    """Where images live. Keys are validated with :func:`validate_key`."""

    backend: str

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key`` (overwrite: a re-run writes the same key)."""

    async def get(self, key: str) -> StoredObject:
        """Read an object; raises ``NotFound`` when absent."""

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    def url(self, key: str, base_url: str) -> str:
        """The URL a client fetches the object from."""

    async def stats(self) -> StorageStats: ...

    async def close(self) -> None: ...


@runtime_checkable
class BlockingWrites(Protocol):
    """A storage that can also write from any thread, blocking (local disk): a result
    image is then written by the CPU-pool task that just processed it, one thread hop
    per image instead of two."""

    def write_blocking(self, key: str, data: bytes) -> None:
        """What :meth:`Storage.put` does, from a worker thread."""


def validate_key(key: str) -> str:
    """Return ``key`` if every segment is a safe name; raise ``StorageError`` otherwise.

    Rejects absolute paths, ``..``, empty segments, backslashes and control characters,
    so no key can reach outside a storage root.
    """
    if not key or len(key) > 1024:
        raise StorageError("invalid storage key", code="invalid_key")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _SEGMENT.fullmatch(part):
            raise StorageError(f"invalid storage key segment {part!r}", code="invalid_key")
    return key


@functools.lru_cache(maxsize=4096)  # account and project names: a handful, on every image
def _slug(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip(".-")
    return (cleaned or "default")[:64]


def image_key(
    *,
    prefix: str,
    account: str,
    project: str,
    created_at: datetime,
    generation_id: str,
    index: int,
    ext: str,
) -> str:
    """``{prefix}/{account}/{project}/{yyyy}/{mm}/{generation_id}-{index}.{ext}`` (DESIGN.md)."""
    parts = [
        _slug(account),
        _slug(project),
        f"{created_at.year:04d}",
        f"{created_at.month:02d}",
        f"{generation_id}-{index}.{ext}",
    ]
    if prefix:
        parts.insert(0, "/".join(_slug(p) for p in prefix.strip("/").split("/") if p))
    return validate_key("/".join(parts))


def partial_key(
    *,
    prefix: str,
    account: str,
    project: str,
    created_at: datetime,
    generation_id: str,
    sequence: int,
    ext: str,
) -> str:
    """``{prefix}/partials/{account}/{project}/{yyyy}/{mm}/{generation_id}-{sequence}.{ext}``.

    Previews live under their own folder, so a bucket lifecycle rule can expire them.
    """
    folder = f"{prefix.strip('/')}/{PARTIALS}" if prefix.strip("/") else PARTIALS
    return image_key(
        prefix=folder,
        account=account,
        project=project,
        created_at=created_at,
        generation_id=generation_id,
        index=sequence,
        ext=ext,
    )
