"""SVG sanitising, sizing and rasterising (media/svg.py)."""

from __future__ import annotations

import pytest

from pixelgate.errors import ImageRejected
from pixelgate.media import svg
from pixelgate.media.svg import is_svg, process_svg_sync, sanitize_svg

HOSTILE = b"""<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
     viewBox="0 0 200 100" onload="alert(1)">
  <script>alert(1)</script>
  <defs><linearGradient id="g"><stop offset="0" stop-color="#fff"/></linearGradient></defs>
  <rect width="10" height="10" fill="url(#g)" onclick="steal()"/>
  <rect width="5" height="5" style="fill: url(https://evil.example/x.svg#p)"/>
  <image xlink:href="http://evil.example/x.png"/>
  <image href="data:image/png;base64,iVBORw0KGgo="/>
  <use href="https://evil.example/sprite.svg#a"/><use href="#g"/>
  <foreignObject><iframe xmlns="http://www.w3.org/1999/xhtml" src="https://evil.example"/></foreignObject>
  <style>@import url(https://evil.example/x.css); rect { fill: red }</style>
  <a href="javascript:alert(1)"><rect width="1" height="1"/></a>
</svg>"""
LIMIT = 1_000_000


def test_scripts_handlers_and_external_references_are_removed() -> None:
    clean, width, height = sanitize_svg(HOSTILE, max_bytes=LIMIT)
    text = clean.decode()
    for bad in ("script", "onload", "onclick", "evil.example", "foreignObject", "javascript",
                "@import", "<a "):  # fmt: skip
        assert bad not in text, bad
    assert 'fill="url(#g)"' in text and 'href="#g"' in text
    assert "data:image/png;base64" in text
    assert (width, height) == (200, 100)


def test_entities_and_dtds_are_refused() -> None:
    bomb = b'<!DOCTYPE svg [<!ENTITY a "aaaa">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>'
    with pytest.raises(ImageRejected):
        sanitize_svg(bomb, max_bytes=LIMIT)


def test_non_svg_xml_and_oversized_documents_are_refused() -> None:
    with pytest.raises(ImageRejected):
        sanitize_svg(b"<html><body/></html>", max_bytes=LIMIT)
    with pytest.raises(ImageRejected) as caught:
        sanitize_svg(HOSTILE, max_bytes=100)
    assert caught.value.code == "image_too_large"


def test_sniffing() -> None:
    assert is_svg(HOSTILE) and is_svg(b"  <svg xmlns='http://www.w3.org/2000/svg'/>")
    assert not is_svg(b"\x89PNG\r\n\x1a\n") and not is_svg(b"<html/>")


def test_svg_is_kept_as_svg_and_png_is_rasterised() -> None:
    kept = process_svg_sync(HOSTILE, want_format="svg", max_bytes=LIMIT, max_pixels=10**7)
    assert kept.format == "svg" and kept.content_type == "image/svg+xml"
    plain = (
        b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 100">'
        b'<rect width="9" height="9"/></svg>'
    )
    raster = process_svg_sync(plain, want_format="webp", max_bytes=LIMIT, max_pixels=10**7)
    assert raster.format == "webp" and (raster.width, raster.height) == (200, 100)
    # a broken embedded image fails the render with a clear error, not a crash
    with pytest.raises(ImageRejected, match="rasterised"):
        process_svg_sync(HOSTILE, want_format="png", max_bytes=LIMIT, max_pixels=10**7)


def test_without_a_rasteriser_raster_formats_are_refused_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(svg, "rasterizer_available", lambda: False)
    with pytest.raises(ImageRejected) as caught:
        process_svg_sync(HOSTILE, want_format="png", max_bytes=LIMIT, max_pixels=10**7)
    assert caught.value.code == "svg_rasterizer_unavailable"
    assert "pixelgate[svg]" in caught.value.message
