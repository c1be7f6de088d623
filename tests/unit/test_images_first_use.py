"""Pillow loads at the first image (``media/images.py``), hardened against decompression
bombs process-wide as it loads when the runtime asked for it before; in a fresh process,
since this one has loaded Pillow already."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_SCRIPT = r"""
import json, struct, sys, warnings, zlib
from pixelgate.media.images import harden_image_decoding, process_image_sync

def png(width, height):
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

if sys.argv[1] == "harden":
    harden_image_decoding()
before = "PIL.Image" in sys.modules
image = process_image_sync(png(3, 2), want_format="jpeg", max_bytes=10**6, max_pixels=100)
from PIL import Image
bomb_is_error = any(
    f[0] == "error" and f[2] is Image.DecompressionBombWarning for f in warnings.filters
)
print(json.dumps([before, image.format, image.width, image.height, bomb_is_error]))
"""


@pytest.mark.parametrize(("mode", "hardened"), [("harden", True), ("plain", False)])
def test_the_first_image_loads_pillow_hardened_as_asked(mode: str, hardened: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded_before, fmt, width, height, bomb_is_error = json.loads(done.stdout)
    assert not loaded_before
    assert (fmt, width, height) == ("jpeg", 3, 2)
    assert bomb_is_error is hardened
