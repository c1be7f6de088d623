"""What local storage wrote is read back once from memory (``storage/recent.py``): the
synchronous OpenAI answer's base64 of the image its job has just stored."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pixelgate.errors import NotFound, StorageError
from pixelgate.storage import recent
from pixelgate.storage.local import LocalStorage
from pixelgate.storage.recent import RecentWrites


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "images")


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every function a read hands to a thread."""
    seen: list[Any] = []
    real = asyncio.to_thread

    async def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        seen.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return seen


async def test_the_read_after_a_write_takes_no_thread(
    storage: LocalStorage, hops: list[Any]
) -> None:
    storage.write_blocking("a/b/one.png", b"png bytes")
    got = await storage.get("a/b/one.png")
    assert (got.data, got.content_type, hops) == (b"png bytes", "image/png", [])
    # taken once: the next read is the file's, the same bytes
    assert (await storage.get("a/b/one.png")).data == b"png bytes" and len(hops) == 1
    assert len(storage.recent) == 0


async def test_a_rewrite_is_read_as_rewritten(storage: LocalStorage) -> None:
    await storage.put("a/two.png", b"first", "image/png")
    await storage.put("a/two.png", b"second", "image/png")
    assert (await storage.get("a/two.png")).data == b"second"


async def test_a_deleted_key_is_not_answered_from_memory(storage: LocalStorage) -> None:
    await storage.put("a/three.png", b"bytes", "image/png")
    await storage.delete("a/three.png")
    with pytest.raises(NotFound):
        await storage.get("a/three.png")


async def test_a_failed_write_leaves_nothing_to_read(storage: LocalStorage) -> None:
    (storage.root / "a").mkdir(parents=True)
    (storage.root / "a" / "dir.png").mkdir()  # a directory where the file would go
    with pytest.raises(StorageError):
        storage.write_blocking("a/dir.png", b"bytes")
    assert len(storage.recent) == 0


def test_memory_is_bounded_in_bytes_oldest_first() -> None:
    writes = RecentWrites(max_bytes=10, max_item_bytes=8)
    writes.add("a", b"1234")
    writes.add("b", b"1234")
    writes.add("c", b"1234")  # 12 bytes: "a" goes
    writes.add("big", b"123456789")  # over the item cap: not kept
    assert (writes.take("a"), writes.take("big"), writes.size_bytes) == (None, None, 8)
    assert writes.take("b") == b"1234" and writes.take("c") == b"1234"
    assert (len(writes), writes.size_bytes) == (0, 0)


def test_old_writes_are_not_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(recent.time, "monotonic", lambda: now[0])
    writes = RecentWrites(max_age_s=10)
    writes.add("a", b"x")
    writes.add("b", b"y")
    now[0] += 9.9
    assert writes.take("a") == b"x"
    now[0] += 0.2
    assert writes.take("b") is None and writes.size_bytes == 0
