from __future__ import annotations

import hashlib
import io
import struct
import zlib

import pytest
from PIL import Image

from pixelgate.errors import ImageRejected
from pixelgate.media.images import (
    EXTENSIONS,
    FORMATS,
    SMALL_IMAGE_BYTES,
    is_small_png,
    process_image,
    process_image_sync,
    sniff_format,
)

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def sample(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> Image.Image:
    img = Image.linear_gradient("L").resize(size)
    if mode == "RGBA":
        rgba = Image.merge("RGBA", (img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), img, img))
        return rgba
    return img.convert(mode)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def fits_file() -> bytes:
    """A valid 4x4 FITS image, which Pillow parses when formats are not restricted."""
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8"]
    cards += ["NAXIS   =                    2", "NAXIS1  =                    4"]
    cards += ["NAXIS2  =                    4", "END"]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode()
    return header + bytes(range(16)).ljust(2880, b"\x00")


def process(data: bytes, want: str | None = None, **caps: int) -> object:
    return process_image_sync(
        data,
        want_format=want,
        max_bytes=caps.get("max_bytes", MAX_BYTES),
        max_pixels=caps.get("max_pixels", MAX_PIXELS),
    )


def test_png_passthrough_keeps_the_original_bytes() -> None:
    data = encode(sample(), "PNG")
    for want in (None, "png"):
        out = process_image_sync(data, want_format=want, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        assert out.data is data
        assert (out.format, out.content_type) == ("png", "image/png")
        assert (out.width, out.height) == (64, 48)
        assert out.sha256 == hashlib.sha256(data).hexdigest()
        assert out.bytes == len(data)


def test_jpeg_passthrough_maps_pillow_format_name() -> None:
    data = encode(sample(), "JPEG")
    for want in (None, "jpeg", "jpg", "JPEG"):
        out = process_image_sync(data, want_format=want, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        assert out.data is data
        assert out.format == "jpeg"


@pytest.mark.parametrize("want", ["jpeg", "webp"])
def test_png_is_converted_with_dims_format_and_hash(want: str) -> None:
    data = encode(sample(size=(120, 80)), "PNG")
    out = process_image_sync(data, want_format=want, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert out.data != data
    assert out.format == want
    assert out.content_type == FORMATS[want]
    assert (out.width, out.height) == (120, 80)
    assert out.sha256 == hashlib.sha256(out.data).hexdigest()
    assert out.bytes == len(out.data)
    with Image.open(io.BytesIO(out.data)) as img:
        assert img.format == want.upper()
        assert img.size == (120, 80)


def test_rgba_to_jpeg_is_flattened_over_white() -> None:
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    out = process_image_sync(
        encode(img, "PNG"), want_format="jpeg", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )
    with Image.open(io.BytesIO(out.data)) as decoded:
        assert decoded.mode == "RGB"
        pixel = decoded.getpixel((16, 16))
        assert isinstance(pixel, tuple)
        assert all(channel > 245 for channel in pixel)


def test_palette_with_transparency_to_jpeg() -> None:
    img = Image.new("P", (16, 16), 0)
    img.info["transparency"] = 0
    out = process_image_sync(
        encode(img, "GIF"), want_format="jpeg", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )
    assert out.format == "jpeg"


def test_gif_and_avif_inputs_are_converted_when_no_format_is_asked() -> None:
    gif = process_image_sync(
        encode(sample(), "GIF"), want_format=None, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )
    assert gif.format == "png"
    avif = process_image_sync(
        encode(sample(), "AVIF"), want_format=None, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )
    assert avif.format == "webp"
    assert (avif.width, avif.height) == (64, 48)


def test_conversion_strips_metadata_and_applies_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    exif[0x010F] = "SecretCam"
    data = encode(sample(size=(40, 20)), "JPEG", exif=exif.tobytes())
    out = process_image_sync(data, want_format="png", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert (out.width, out.height) == (20, 40)
    assert b"SecretCam" not in out.data
    with Image.open(io.BytesIO(out.data)) as img:
        assert "exif" not in img.info
        assert "icc_profile" not in img.info


def test_header_claiming_20000x20000_is_refused_as_a_bomb() -> None:
    data = png_claiming(20_000, 20_000)
    assert len(data) < 1000
    with pytest.raises(ImageRejected) as info:
        process(data, max_pixels=10**12)
    assert info.value.code == "image_too_large"


def test_pillow_bomb_warning_is_an_error() -> None:
    # 100 MP: over Pillow's warning threshold, under its hard error and under our cap
    with pytest.raises(ImageRejected) as info:
        process(png_claiming(10_000, 10_000), max_pixels=10**12)
    assert info.value.code == "image_too_large"


def test_normal_image_over_our_pixel_cap_is_refused() -> None:
    data = encode(sample(size=(100, 100)), "PNG")
    with pytest.raises(ImageRejected) as info:
        process(data, max_pixels=9_999)
    assert info.value.code == "image_too_large"
    assert "100x100" in info.value.message
    assert process(data, max_pixels=10_000)


def test_bytes_over_the_cap_are_refused_before_decoding() -> None:
    garbage = b"\x00" * 2048
    with pytest.raises(ImageRejected) as info:
        process(garbage, max_bytes=1024)
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"this is not an image at all",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n",
        b"BM" + b"\x00" * 64,
    ],
    ids=["empty", "text", "broken-png", "pdf", "eps", "bmp-ish"],
)
def test_garbage_and_unaccepted_formats_are_refused(data: bytes) -> None:
    with pytest.raises(ImageRejected) as info:
        process(data)
    assert info.value.code == "unsupported_image"


def test_fits_is_never_parsed() -> None:
    data = fits_file()
    with Image.open(io.BytesIO(data)) as img:  # Pillow itself would read it...
        assert img.format == "FITS"
    with pytest.raises(ImageRejected) as info:  # ...we do not
        process(data)
    assert info.value.code == "unsupported_image"


def test_real_bmp_is_not_an_accepted_input() -> None:
    with pytest.raises(ImageRejected) as info:
        process(encode(sample(), "BMP"))
    assert info.value.code == "unsupported_image"


def test_truncated_image_is_refused() -> None:
    data = encode(sample(size=(256, 256)), "PNG")
    with pytest.raises(ImageRejected) as info:
        process(data[: len(data) // 2])
    assert info.value.code == "unsupported_image"


def test_unknown_output_format_is_refused() -> None:
    with pytest.raises(ImageRejected):
        process(encode(sample(), "PNG"), want="tiff")


async def test_process_image_runs_in_the_pool() -> None:
    data = encode(sample(), "PNG")
    out = await process_image(data, want_format="webp", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert out.format == "webp"
    assert (out.width, out.height) == (64, 48)


def test_a_small_png_is_judged_from_its_header() -> None:
    small = encode(sample(size=(128, 128)), "PNG")
    assert is_small_png(small, None) and is_small_png(small, "png")
    assert not is_small_png(small, "webp")  # a conversion: the pool's work
    assert not is_small_png(encode(sample(size=(129, 128)), "PNG"), None)
    assert not is_small_png(encode(sample(size=(64, 64)), "JPEG"), None)
    # a bomb's header is what counts, not its few bytes
    assert not is_small_png(png_claiming(20_000, 20_000), None)
    assert not is_small_png(png_claiming(0, 0), None)
    assert not is_small_png(small[:20], None)
    noisy = Image.frombytes("RGB", (128, 128), bytes(range(256)) * 192)
    padded = encode(noisy, "PNG", compress_level=0) + b"\0" * SMALL_IMAGE_BYTES
    assert not is_small_png(padded, None)


def test_extensions() -> None:
    assert EXTENSIONS == {"png": "png", "jpeg": "jpg", "webp": "webp"}
    assert set(FORMATS) == set(EXTENSIONS)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("GIF", "gif"), ("AVIF", "avif")],
)
def test_sniff_format_real_images(fmt: str, expected: str) -> None:
    assert sniff_format(encode(sample(), fmt)) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF8",
        b"%PDF-1.4",
        b"RIFF\x00\x00\x00\x00WAVE",
        b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 8,
    ],
)
def test_sniff_format_unknown(data: bytes) -> None:
    assert sniff_format(data) is None


def test_sniff_format_avif_compatible_brand() -> None:
    data = b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf" + b"\x00" * 16
    assert sniff_format(data) == "avif"
