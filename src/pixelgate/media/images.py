"""Validate, normalise and convert image bytes, safely and off the event loop (a small
PNG that stays PNG aside: checking it costs less than the hop, see :func:`is_small_png`).

Untrusted bytes are capped in size before anything parses them, only a short list of
well-fuzzed formats is ever opened (never FITS, PDF, GD or EPS), and the pixel count
is checked from the header before the pixels are decoded.

Pillow loads at the first image (~2.3 MB resident, ~12 ms), not with the process.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import io
import struct
import sys
import threading
import warnings
import zlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from pixelgate.errors import ImageRejected
from pixelgate.media.cpu import run_cpu

if TYPE_CHECKING:
    from PIL import Image
    from PIL.ImageCms import core

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "INPUT_FORMATS",
    "SMALL_IMAGE_BYTES",
    "SMALL_IMAGE_PIXELS",
    "ProcessedImage",
    "is_small_png",
    "process_image",
    "process_image_sync",
    "sniff_format",
]

#: output formats and their content types
FORMATS: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
#: file extension of each output format
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}
#: the Pillow plugins allowed to parse input bytes
INPUT_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "AVIF", "GIF")

JPEG_QUALITY = 90
WEBP_QUALITY = 90
TOO_LARGE = "image_too_large"
UNSUPPORTED = "unsupported_image"

_ALIASES = {"jpg": "jpeg"}
#: where inputs that are not an output format go when no format is asked for
_DEFAULT_TARGET = {"gif": "png", "avif": "webp"}
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})
_JPEG_MODES = frozenset({"L", "RGB"})
_WEBP_MODES = frozenset({"RGB", "RGBA"})
_WHITE = (255, 255, 255)
_loading = threading.Lock()
_harden = False
_loaded: ModuleType | None = None
# Pillow's plugins raise a wide variety of exceptions on hostile input.
_DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ArithmeticError,
)


@dataclass(frozen=True)
class ProcessedImage:
    """A validated image ready to store: final bytes and what we know about them."""

    data: builtins.bytes
    width: int
    height: int
    format: str
    content_type: str
    sha256: str
    bytes: int


def harden_image_decoding() -> None:
    """Turn Pillow's decompression-bomb warning into an error process-wide (now if Pillow
    is loaded, else as it loads).

    ``warnings.catch_warnings`` in :func:`process_image_sync` is not thread-safe, so
    this process-wide filter is what guarantees the check in the thread pool.
    """
    global _harden
    with _loading:
        _harden = True
        if "PIL.Image" in sys.modules:
            _install_bomb_filter(sys.modules["PIL.Image"])


def _pil() -> ModuleType:
    """Pillow's ``Image``, hardened as :func:`harden_image_decoding` asked, before any
    decoding (each thread that decodes calls this first, so none can enter
    ``catch_warnings`` before the process-wide filter is in place)."""
    global _loaded
    if _loaded is None:
        with _loading:
            if _loaded is None:
                from PIL import Image

                if _harden:
                    _install_bomb_filter(Image)
                _loaded = Image
    return _loaded


def _install_bomb_filter(image: ModuleType) -> None:
    warnings.filterwarnings("error", category=image.DecompressionBombWarning)


def process_image_sync(
    data: builtins.bytes, *, want_format: str | None, max_bytes: int, max_pixels: int
) -> ProcessedImage:
    """Validate ``data`` and return it in ``want_format`` (or as is, when acceptable).

    The original bytes are kept unchanged when no other format is asked for and the
    input is already PNG, JPEG or WebP; otherwise the image is re-encoded without
    metadata (EXIF orientation applied, colours converted to sRGB).

    Raises:
        ImageRejected: ``image_too_large`` when bytes or pixels exceed the caps,
            ``unsupported_image`` when the bytes are not a decodable accepted image.
    """
    target = _normalise_format(want_format)
    if len(data) > max_bytes:
        raise ImageRejected(
            f"image is {len(data)} bytes, over the limit of {max_bytes}", code=TOO_LARGE
        )
    if not data:
        raise ImageRejected("image is empty", code=UNSUPPORTED)
    pil = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pil.DecompressionBombWarning)
            with pil.open(io.BytesIO(data), formats=list(INPUT_FORMATS)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise _too_many_pixels(width, height, max_pixels)
                img.load()
                source = (img.format or "").lower()
                if target is None:
                    target = _DEFAULT_TARGET.get(source, source)
                if source == target:
                    out = data
                else:
                    out, (width, height) = _encode(img, target)
    except ImageRejected:
        raise
    except (pil.DecompressionBombError, pil.DecompressionBombWarning) as exc:
        raise ImageRejected(
            f"image rejected as a decompression bomb: {exc}", code=TOO_LARGE
        ) from None
    except pil.UnidentifiedImageError:
        raise ImageRejected(
            "not a supported image (accepted: PNG, JPEG, WebP, AVIF, GIF)", code=UNSUPPORTED
        ) from None
    except _DECODE_ERRORS as exc:
        raise ImageRejected(f"image could not be decoded: {exc}", code=UNSUPPORTED) from None
    return ProcessedImage(
        data=out,
        width=width,
        height=height,
        format=target,
        content_type=FORMATS[target],
        sha256=hashlib.sha256(out).hexdigest(),
        bytes=len(out),
    )


async def process_image(
    data: builtins.bytes, *, want_format: str | None, max_bytes: int, max_pixels: int
) -> ProcessedImage:
    """:func:`process_image_sync` in the CPU pool."""
    return await run_cpu(
        process_image_sync,
        data,
        want_format=want_format,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
    )


#: a PNG this small (bytes, and pixels from its header) is validated in ~0.1 ms: less
#: than handing it to a worker thread and back costs (see ``Materializer.store_image``)
SMALL_IMAGE_BYTES = 64 * 1024
SMALL_IMAGE_PIXELS = 128 * 128
_PNG_HEADER = struct.Struct(">8sI4sII")  # signature, IHDR length, "IHDR", width, height


def is_small_png(data: builtins.bytes, want_format: str | None) -> bool:
    """Whether ``data`` is a PNG within the small bounds that stays PNG (no conversion),
    judged from its header only: the pixels Pillow would decode are the header's."""
    if len(data) > SMALL_IMAGE_BYTES or len(data) < _PNG_HEADER.size:
        return False
    if want_format not in (None, "png"):
        return False
    signature, length, chunk, width, height = _PNG_HEADER.unpack_from(data)
    if signature != b"\x89PNG\r\n\x1a\n" or length != 13 or chunk != b"IHDR":
        return False
    return 0 < width * height <= SMALL_IMAGE_PIXELS


def sniff_format(data: builtins.bytes) -> str | None:
    """The image format named by the magic bytes: png, jpeg, webp, gif, avif or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[4:8] == b"ftyp" and len(data) >= 12:
        box_size = int.from_bytes(data[:4], "big")
        brands = {data[8:12]}
        box = data[16 : min(box_size, 64)]
        brands.update(box[i : i + 4] for i in range(0, len(box) - 3, 4))
        if brands & {b"avif", b"avis"}:
            return "avif"
    return None


def _normalise_format(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    name = _ALIASES.get(fmt.lower(), fmt.lower())
    if name not in FORMATS:
        raise ImageRejected(
            f"unsupported output format {fmt!r} (use png, jpeg or webp)", code=UNSUPPORTED
        )
    return name


def _too_many_pixels(width: int, height: int, max_pixels: int) -> ImageRejected:
    return ImageRejected(
        f"image is {width}x{height} ({width * height} pixels), over the limit of {max_pixels}",
        code=TOO_LARGE,
    )


def _encode(img: Image.Image, fmt: str) -> tuple[builtins.bytes, tuple[int, int]]:
    """Re-encode ``img`` as ``fmt`` with no metadata (EXIF, ICC, text) carried over."""
    from PIL import ImageOps

    im = _to_srgb(ImageOps.exif_transpose(img))
    if fmt == "jpeg":
        im = _flatten(im) if im.mode not in _JPEG_MODES else im
        options: dict[str, object] = {"quality": JPEG_QUALITY}
    elif fmt == "webp":
        if im.mode not in _WEBP_MODES:
            im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        options = {"quality": WEBP_QUALITY}
    else:
        if im.mode not in _PNG_MODES:
            im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        options = {"optimize": False}
    im.info = {}
    buf = io.BytesIO()
    im.save(buf, format=fmt.upper(), **options)
    return buf.getvalue(), im.size


def _flatten(im: Image.Image) -> Image.Image:
    """RGB over a white background (JPEG has no alpha)."""
    if not im.has_transparency_data:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    background = _pil().new("RGB", rgba.size, _WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _to_srgb(im: Image.Image) -> Image.Image:
    """Convert embedded-profile colours to sRGB, since the profile is not kept."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA"):
        return im
    # LittleCMS and the sRGB profile load at the first image that embeds a profile
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(im, source, _srgb(), outputMode=im.mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im
    return converted if converted is not None else im


@functools.cache
def _srgb() -> core.CmsProfile:
    from PIL import ImageCms

    return ImageCms.createProfile("sRGB")
