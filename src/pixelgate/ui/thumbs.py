"""Gallery thumbnails: made once with Pillow in the CPU pool, cached in the data dir.

A stored image never changes, so its id names its thumbnail for good. The aspect ratio is
kept (``Image.thumbnail`` fits the image inside the box); decoding runs under the same
decompression-bomb cap as every other image the gateway reads.
"""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

from PIL import Image, ImageOps

from pixelgate.config import Settings
from pixelgate.media.cpu import run_cpu
from pixelgate.storage.base import Storage

__all__ = ["THUMB_SIZE", "thumbnail"]

THUMB_SIZE = 256
THUMB_DIR = "ui-thumbs"
THUMB_QUALITY = 80


def _make(data: bytes, size: int) -> bytes:
    with Image.open(io.BytesIO(data)) as source:
        im: Image.Image = ImageOps.exif_transpose(source)
        im.thumbnail((size, size))
        if im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        out = io.BytesIO()
        im.save(out, "WEBP", quality=THUMB_QUALITY)
        return out.getvalue()


def _cache_path(settings: Settings, image_id: str) -> Path:
    return settings.data_dir.resolve() / THUMB_DIR / f"{image_id}.webp"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one


async def thumbnail(settings: Settings, storage: Storage, image_id: str, key: str) -> bytes:
    """The WebP thumbnail of a stored image (at most ``THUMB_SIZE`` on its longer side)."""
    path = _cache_path(settings, image_id)
    cached = await run_cpu(_read, path)
    if cached is not None:
        return cached
    original = await storage.get(key)
    data = await run_cpu(_make, original.data, THUMB_SIZE)
    await run_cpu(_write, path, data)
    return data
