"""A result image is processed and written in one go where the storage can write from
a thread (local disk): a small PNG on the event loop, any other in one CPU-pool task;
through ``Storage.put`` everywhere else."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from pixelgate.config import load_settings
from pixelgate.core.materialize import Materializer
from pixelgate.core.models import GenerationRequest
from pixelgate.core.records import ClaimedJob
from pixelgate.errors import ImageRejected, StorageError
from pixelgate.media.fetch import SafeFetcher
from pixelgate.providers.placeholder import render_placeholder
from pixelgate.storage.base import StoredObject
from pixelgate.storage.local import LocalStorage

JOB = ClaimedJob(
    id="gen_01test",
    account_id="acc_1",
    account_name="team",
    project="default",
    request={},
    created_at=datetime(2026, 12, 6, tzinfo=UTC),
    provider_job_id=None,
    provider_job_provider=None,
    deliveries=1,
)
PNG = render_placeholder("a red fox", width=64, height=64, fmt="png", seed=1)
#: over the small-image bound (128x128 pixels): processed in the CPU pool
LARGE_PNG = render_placeholder("a red fox", width=160, height=160, fmt="png", seed=1)


class CountingLocal(LocalStorage):
    """Local storage that records which road each write took, and in which thread."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts = 0
        self.blocking_threads: list[str] = []

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        self.puts += 1
        await super().put(key, data, content_type)

    def write_blocking(self, key: str, data: bytes) -> None:
        self.blocking_threads.append(threading.current_thread().name)
        super().write_blocking(key, data)


class MemoryStorage:
    """A storage without ``write_blocking`` (as S3 is)."""

    backend = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        self.objects[key] = data

    async def get(self, key: str) -> StoredObject:
        return StoredObject(key=key, data=self.objects[key], content_type="image/png")


def _materializer(tmp_path: Path, storage: Any) -> Materializer:
    settings = load_settings(data_dir=tmp_path / "data", admin_key="pg_" + "k" * 40)
    return Materializer(
        settings=settings,
        storage=storage,
        fetcher=SafeFetcher(),
        http=httpx.AsyncClient(),
    )


def _request(fmt: str = "png") -> GenerationRequest:
    return GenerationRequest(prompt="a red fox", width=64, height=64, format=fmt)


@pytest.mark.parametrize(
    ("png", "side", "thread"),
    [(PNG, 64, "MainThread"), (LARGE_PNG, 160, "pixelgate-cpu")],
    ids=["small-on-the-loop", "large-in-the-pool"],
)
async def test_local_storage_is_written_by_the_task_that_processed_the_image(
    tmp_path: Path, png: bytes, side: int, thread: str
) -> None:
    storage = CountingLocal(tmp_path / "images")
    image = await _materializer(tmp_path, storage).store_image(
        JOB, _request(), png, 0, attribution=None
    )
    assert storage.puts == 0
    assert len(storage.blocking_threads) == 1
    assert storage.blocking_threads[0].startswith(thread)
    stored = await storage.get(image.key)
    assert stored.data == png
    assert image.sha256 == hashlib.sha256(png).hexdigest()
    assert (image.width, image.height, image.format) == (side, side, "png")


async def test_a_slow_write_on_the_loop_sends_the_next_images_to_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that stalls holds the event loop up once, not for every image."""
    storage = CountingLocal(tmp_path / "images")
    materializer = _materializer(tmp_path, storage)
    monkeypatch.setattr(materializer._inline, "slow_s", 0.0)  # every write is "slow"
    for index in range(3):
        await materializer.store_image(JOB, _request(), PNG, index, attribution=None)
    assert storage.blocking_threads[0] == "MainThread"
    assert all(name.startswith("pixelgate-cpu") for name in storage.blocking_threads[1:])


async def test_a_conversion_is_stored_converted_under_its_own_extension(tmp_path: Path) -> None:
    storage = CountingLocal(tmp_path / "images")
    image = await _materializer(tmp_path, storage).store_image(
        JOB, _request("jpeg"), PNG, 1, attribution=None
    )
    assert image.key.endswith("gen_01test-1.jpg")
    assert (await storage.get(image.key)).data.startswith(b"\xff\xd8\xff")


async def test_a_storage_that_cannot_write_from_a_thread_gets_a_put(tmp_path: Path) -> None:
    storage = MemoryStorage()
    image = await _materializer(tmp_path, storage).store_image(
        JOB, _request(), PNG, 0, attribution=None
    )
    assert storage.objects[image.key] == PNG


async def test_a_rejected_image_writes_nothing(tmp_path: Path) -> None:
    storage = CountingLocal(tmp_path / "images")
    with pytest.raises(ImageRejected):
        await _materializer(tmp_path, storage).store_image(
            JOB, _request(), b"not an image", 0, attribution=None
        )
    assert storage.blocking_threads == [] and storage.puts == 0
    assert not any((tmp_path / "images").rglob("*.png"))


@pytest.mark.parametrize("png", [PNG, LARGE_PNG], ids=["on-the-loop", "in-the-pool"])
async def test_a_storage_failure_reaches_the_job(tmp_path: Path, png: bytes) -> None:
    blocked = tmp_path / "images"
    blocked.write_text("a file where the storage root should be")
    with pytest.raises(StorageError):
        await _materializer(tmp_path, CountingLocal(blocked)).store_image(
            JOB, _request(), png, 0, attribution=None
        )
