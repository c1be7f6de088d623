"""The hand-written stored-PNG writer: Pillow decodes it to the very same pixels."""

from __future__ import annotations

import io
import random
import zlib

import pytest
from PIL import Image

from pixelgate.media.png import stored_png


def noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = random.Random(seed)
    raw = bytes(rng.randrange(256) for _ in range(size[0] * size[1] * len(mode)))
    return Image.frombytes(mode, size, raw)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (64, 64), (3, 200), (200, 3), (129, 130)])
def test_pillow_decodes_the_same_pixels(mode: str, size: tuple[int, int]) -> None:
    img = noise(mode, size, seed=size[0] * 7 + size[1])
    data = stored_png(img)
    back = Image.open(io.BytesIO(data), formats=["PNG"])
    back.load()
    assert back.format == "PNG"
    assert back.mode == mode
    assert back.size == size
    assert back.tobytes() == img.tobytes()
    assert back.info == {}  # no metadata


def test_it_is_stored_not_deflated_and_every_crc_is_checked() -> None:
    img = noise("RGB", (64, 64), seed=1)
    data = stored_png(img)
    assert len(data) > 64 * 64 * 3  # no compression
    # Pillow verifies each chunk's CRC: a flipped byte in the pixels is an error
    broken = bytearray(data)
    broken[len(data) // 2] ^= 0xFF
    with pytest.raises((SyntaxError, OSError, zlib.error)):
        Image.open(io.BytesIO(bytes(broken))).load()


def test_larger_than_one_stored_deflate_block() -> None:
    """A zlib stored block holds at most 65,535 bytes: 200x200 RGBA needs three."""
    img = noise("RGBA", (200, 200), seed=3)
    back = Image.open(io.BytesIO(stored_png(img)))
    assert back.tobytes() == img.tobytes()


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "CMYK"])
def test_other_modes_are_refused(mode: str) -> None:
    with pytest.raises(ValueError, match="cannot store"):
        stored_png(Image.new(mode, (4, 4)))
