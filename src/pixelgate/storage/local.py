"""Images on the local disk, served by pixelgate itself at ``/files/{key}``.

Keys are validated segment by segment and the resolved path must stay inside the
root, so neither ``..``, absolute paths nor a symlink planted under the root can lead
a read or a write outside it. Writes go to a temporary file that is renamed over the
target, so readers never see half an image and a re-run overwrites in place.

Writes are on every job's path, so they are cheap: the root is resolved once, each
directory is created and checked once per process (then remembered), and a new key is
written straight to its file, created with ``O_EXCL | O_NOFOLLOW`` (no temporary file,
no rename: nobody can read a key before the generation naming it has finished). Only an
existing key (a re-run after a crash) goes through a temporary file renamed over it.
Writes run in a thread: creating a file can wait on the filesystem's journal, and the
event loop must not wait with it. What this process just wrote is read back from memory
once (``storage/recent.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pixelgate.errors import NotFound, StorageError
from pixelgate.storage.base import StorageStats, StoredObject, validate_key
from pixelgate.storage.recent import RecentWrites

__all__ = ["CONTENT_TYPES", "LocalStorage", "content_type_for"]

CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
    "svg": "image/svg+xml",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
FILE_MODE = 0o644
#: prefix of in-flight temporary files; no valid key segment starts with a dot
TEMP_PREFIX = ".tmp-"
_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def content_type_for(key: str) -> str:
    """The content type implied by the key's extension."""
    _, dot, ext = key.rpartition(".")
    return CONTENT_TYPES.get(ext.lower(), DEFAULT_CONTENT_TYPE) if dot else DEFAULT_CONTENT_TYPE


class LocalStorage:
    """A :class:`~pixelgate.storage.base.Storage` on a directory of the local disk."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._resolved_root: Path | None = None
        #: directories under the root this process created or checked (real, inside)
        self._known_dirs: set[str] = set()
        #: the bytes of the latest writes, for the read that follows them
        self.recent = RecentWrites()

    @property
    def _root(self) -> Path:
        if self._resolved_root is None:
            self._resolved_root = self.root.resolve()
        return self._resolved_root

    def path_for(self, key: str) -> Path:
        """The file of ``key``, guaranteed to be inside the root.

        Raises:
            StorageError: the key is invalid or resolves outside the root.
        """
        validate_key(key)
        root = self._root
        path = (root / key).resolve()
        if not path.is_relative_to(root) or path == root:
            raise _outside_root()
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write ``data`` atomically; the content type is implied by the extension."""
        validate_key(key)
        await asyncio.to_thread(self._write, key, data)

    def write_blocking(self, key: str, data: bytes) -> None:
        """:meth:`put` from a worker thread (``storage.base.BlockingWrites``)."""
        validate_key(key)
        self._write(key, data)

    async def get(self, key: str) -> StoredObject:
        written = self.recent.take(key)  # only valid keys were written
        if written is not None:
            return StoredObject(key=key, data=written, content_type=content_type_for(key))
        directory = key.rpartition("/")[0]
        read: Callable[[], bytes]
        if directory in self._known_dirs:
            # read right after this process wrote it (an OpenAI-shaped answer's base64):
            # the directory was checked inside the root, and the file is opened without
            # following a link, so no path resolution is needed
            validate_key(key)
            read = partial(_read_no_follow, os.path.join(self._root, key))
        else:
            read = self.path_for(key).read_bytes
        try:
            data = await asyncio.to_thread(read)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no stored object {key!r}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link planted where the image was
                raise _outside_root() from None
            raise StorageError(f"cannot read {key!r}: {exc.strerror}") from exc
        return StoredObject(key=key, data=data, content_type=content_type_for(key))

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        self.recent.discard(key)
        try:
            await asyncio.to_thread(_unlink_quietly, path)
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {exc.strerror or exc}") from exc

    async def exists(self, key: str) -> bool:
        path = self.path_for(key)
        return await asyncio.to_thread(path.is_file)

    def url(self, key: str, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/files/{validate_key(key)}"

    async def stats(self) -> StorageStats:
        objects, size = await asyncio.to_thread(self._walk)
        return StorageStats(objects=objects, bytes=size, backend=self.backend)

    async def close(self) -> None:
        return None

    def _write(self, key: str, data: bytes) -> None:
        directory, _, name = key.rpartition("/")
        root = self._root
        parent = os.path.join(root, directory) if directory else str(root)
        try:
            if directory not in self._known_dirs:
                _check_inside(root, parent, directory)
                os.makedirs(parent, exist_ok=True)
                # makedirs may have followed a symlink created meanwhile: check again.
                _check_inside(root, parent, directory)
                self._known_dirs.add(directory)
            path = os.path.join(parent, name)
            try:
                _write_new(path, data)
            except FileExistsError:
                if os.path.islink(path):  # never write through (or over) a planted link
                    raise _outside_root() from None
                tmp = os.path.join(parent, f"{TEMP_PREFIX}{secrets.token_hex(8)}")
                try:
                    _write_new(tmp, data)
                    os.replace(tmp, path)
                except BaseException:
                    _unlink_quietly(Path(tmp))
                    raise
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc.strerror or exc}") from exc
        self.recent.add(key, data)

    def _walk(self) -> tuple[int, int]:
        objects = size = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    continue
                with contextlib.suppress(OSError):
                    size += os.stat(os.path.join(dirpath, name), follow_symlinks=False).st_size
                    objects += 1
        return objects, size


def _read_no_follow(path: str) -> bytes:
    fd = os.open(path, _READ)
    with os.fdopen(fd, "rb") as file:
        return file.read()


def _write_new(path: str, data: bytes) -> None:
    """Create ``path`` (never through a symlink, never over a file) holding ``data``."""
    fd = os.open(path, _CREATE, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink_quietly(Path(path))
        raise
    os.close(fd)




def _check_inside(root: Path, parent: str, directory: str) -> None:
    real = Path(parent).resolve()
    if not real.is_relative_to(root) or (real == root and directory):
        raise _outside_root()


def _outside_root() -> StorageError:
    return StorageError("storage key resolves outside the storage root", code="invalid_key")


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
