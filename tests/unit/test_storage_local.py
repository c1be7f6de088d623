from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pixelgate.errors import NotFound, StorageError
from pixelgate.storage.base import Storage, image_key
from pixelgate.storage.local import TEMP_PREFIX, LocalStorage, content_type_for

BAD_KEYS = [
    "../x.png",
    "a/../../x.png",
    "/etc/passwd",
    "a//b.png",
    "a/./b.png",
    "a\\..\\b.png",
    "..\\x.png",
    "%2e%2e/x.png",
    "a/%2e%2e/%2e%2e/x.png",
    "..%2fx.png",
    "a/b.png\x00.txt",
    "a/\x00/b.png",
    "a/b.png\n",
    "",
    ".",
    "..",
    "a/",
    ".hidden.png",
    "~/x.png",
]


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "files"
    path.mkdir()
    return path


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage(root)


def test_implements_the_storage_protocol(storage: LocalStorage) -> None:
    backend: Storage = storage
    assert backend.backend == "local"


async def test_round_trip(storage: LocalStorage, root: Path) -> None:
    key = "img/acct/proj/2026/01/gen_1-0.png"
    await storage.put(key, b"\x89PNG data", "image/png")
    assert await storage.exists(key)
    obj = await storage.get(key)
    assert (obj.key, obj.data, obj.content_type) == (key, b"\x89PNG data", "image/png")
    assert (root / key).read_bytes() == b"\x89PNG data"
    assert storage.path_for(key) == (root / key).resolve()
    await storage.delete(key)
    assert not await storage.exists(key)
    await storage.delete(key)  # deleting twice is fine


async def test_missing_object_is_not_found(storage: LocalStorage) -> None:
    with pytest.raises(NotFound):
        await storage.get("nope/missing.png")
    assert not await storage.exists("nope/missing.png")


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("a/x.png", "image/png"),
        ("a/x.jpg", "image/jpeg"),
        ("a/x.JPEG", "image/jpeg"),
        ("a/x.webp", "image/webp"),
        ("a/x.gif", "image/gif"),
        ("a/x.avif", "image/avif"),
        ("a/x.bin", "application/octet-stream"),
        ("a/noext", "application/octet-stream"),
    ],
)
async def test_content_type_comes_from_the_extension(
    storage: LocalStorage, key: str, content_type: str
) -> None:
    assert content_type_for(key) == content_type
    await storage.put(key, b"x", "ignored/type")
    assert (await storage.get(key)).content_type == content_type


async def test_overwrite_is_idempotent(storage: LocalStorage, root: Path) -> None:
    key = "a/b/gen_1-0.webp"
    await storage.put(key, b"first", "image/webp")
    await storage.put(key, b"second", "image/webp")
    await storage.put(key, b"second", "image/webp")
    assert (await storage.get(key)).data == b"second"
    assert sorted(p.name for p in (root / "a" / "b").iterdir()) == ["gen_1-0.webp"]
    stats = await storage.stats()
    assert (stats.objects, stats.bytes) == (1, len(b"second"))


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_traversal_keys_are_refused(storage: LocalStorage, root: Path, key: str) -> None:
    with pytest.raises(StorageError):
        storage.path_for(key)
    with pytest.raises(StorageError):
        await storage.put(key, b"evil", "image/png")
    with pytest.raises(StorageError):
        await storage.get(key)
    with pytest.raises(StorageError):
        await storage.delete(key)
    with pytest.raises(StorageError):
        await storage.exists(key)
    assert list(root.parent.glob("x.png")) == []
    assert files_under(root) == []


async def test_symlinked_directory_pointing_outside_is_refused(
    storage: LocalStorage, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    (root / "evil").symlink_to(outside, target_is_directory=True)

    with pytest.raises(StorageError):
        storage.path_for("evil/secret.png")
    with pytest.raises(StorageError):
        await storage.get("evil/secret.png")
    with pytest.raises(StorageError):
        await storage.put("evil/new.png", b"x", "image/png")
    with pytest.raises(StorageError):
        await storage.put("evil/deeper/new.png", b"x", "image/png")
    with pytest.raises(StorageError):
        await storage.delete("evil/secret.png")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]
    assert (outside / "secret.png").read_bytes() == b"secret"


async def test_symlinked_file_pointing_outside_is_refused(
    storage: LocalStorage, root: Path, tmp_path: Path
) -> None:
    target = tmp_path / "passwd"
    target.write_bytes(b"root:x:0:0")
    (root / "a").mkdir()
    (root / "a" / "link.png").symlink_to(target)
    with pytest.raises(StorageError):
        await storage.get("a/link.png")
    with pytest.raises(StorageError):
        await storage.put("a/link.png", b"overwrite", "image/png")
    assert target.read_bytes() == b"root:x:0:0"


async def test_a_link_planted_over_a_file_this_process_wrote_is_refused(
    storage: LocalStorage, root: Path, tmp_path: Path
) -> None:
    """The read right after a write skips path resolution; it still never follows a link."""
    target = tmp_path / "passwd"
    target.write_bytes(b"root:x:0:0")
    await storage.put("a/b/image.png", b"png bytes", "image/png")
    assert (await storage.get("a/b/image.png")).data == b"png bytes"
    (root / "a" / "b" / "image.png").unlink()
    (root / "a" / "b" / "image.png").symlink_to(target)
    with pytest.raises(StorageError) as caught:
        await storage.get("a/b/image.png")
    assert caught.value.code == "invalid_key"
    (root / "a" / "b" / "image.png").unlink()
    with pytest.raises(NotFound):
        await storage.get("a/b/image.png")


async def test_root_itself_behind_a_symlink_works(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    storage = LocalStorage(tmp_path / "alias")
    await storage.put("a/x.png", b"ok", "image/png")
    assert (real / "a" / "x.png").read_bytes() == b"ok"


def test_url(storage: LocalStorage) -> None:
    assert storage.url("a/b.png", "http://h:8080/") == "http://h:8080/files/a/b.png"
    assert storage.url("a/b.png", "https://cdn.example") == "https://cdn.example/files/a/b.png"
    with pytest.raises(StorageError):
        storage.url("../b.png", "http://h")


async def test_stats_counts_objects_and_bytes_ignoring_temp_files(
    storage: LocalStorage, root: Path
) -> None:
    assert await storage.stats() == await storage.stats()
    empty = await storage.stats()
    assert (empty.objects, empty.bytes, empty.backend) == (0, 0, "local")
    await storage.put("a/1.png", b"12345", "image/png")
    await storage.put("a/b/2.jpg", b"123", "image/jpeg")
    await storage.put("c/3.webp", b"1", "image/webp")
    (root / "a" / f"{TEMP_PREFIX}abc").write_bytes(b"partial write")
    stats = await storage.stats()
    assert (stats.objects, stats.bytes, stats.backend) == (3, 9, "local")


async def test_stats_of_a_missing_root(tmp_path: Path) -> None:
    stats = await LocalStorage(tmp_path / "absent").stats()
    assert (stats.objects, stats.bytes) == (0, 0)


async def test_put_creates_readable_files(storage: LocalStorage, root: Path) -> None:
    await storage.put("a/x.png", b"x", "image/png")
    assert os.stat(root / "a" / "x.png").st_mode & 0o777 == 0o644
    await storage.close()


def test_image_key_layout() -> None:
    key = image_key(
        prefix="images",
        account="acme",
        project="web",
        created_at=datetime(2026, 3, 7, 12, 0, tzinfo=UTC),
        generation_id="gen_01ABC",
        index=2,
        ext="jpg",
    )
    assert key == "images/acme/web/2026/03/gen_01ABC-2.jpg"


@pytest.mark.parametrize(
    ("account", "slug"),
    [
        ("Acme Corp!", "Acme-Corp"),
        ("../../etc", "etc"),
        ("a/b\\c", "a-b-c"),
        ("...", "default"),
        ("", "default"),
        ("Ünïcødé", "n-c-d"),
        ("x" * 200, "x" * 64),
    ],
)
def test_image_key_slugs_odd_account_names(account: str, slug: str) -> None:
    key = image_key(
        prefix="",
        account=account,
        project="p",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        generation_id="gen_1",
        index=0,
        ext="png",
    )
    assert key == f"{slug}/p/2026/12/gen_1-0.png"


async def test_image_keys_round_trip_through_storage(storage: LocalStorage) -> None:
    key = image_key(
        prefix="a/b",
        account="../evil",
        project="my project",
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        generation_id="gen_x",
        index=0,
        ext="webp",
    )
    assert key == "a/b/evil/my-project/2026/01/gen_x-0.webp"
    await storage.put(key, b"img", "image/webp")
    assert (await storage.get(key)).data == b"img"
