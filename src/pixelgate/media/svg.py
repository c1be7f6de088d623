"""SVG results of vector models: sanitise and keep as SVG, or rasterise on request.

Provider SVG is untrusted markup that we serve from our own origin, so it is parsed with
defusedxml (no DTDs, entities or external loads) and rebuilt from an allow-list: SVG
elements only, no ``<script>``/``<foreignObject>``, no ``on*`` event handlers, and no
reference that leaves the document (``href``/``url(...)`` must point at ``#id``; inline
``data:image`` URLs are the one exception, since they load nothing). PyPI has no
maintained SVG sanitiser (nh3/bleach parse HTML and lower-case SVG's camelCase
attributes), hence the short allow-list here.

Rasterising uses CairoSVG (``pixelgate[svg]``, which needs the system cairo library)
on the sanitised markup; without it, PNG/JPEG/WebP from a vector model is refused.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import importlib.util
import re
from typing import TYPE_CHECKING

from pixelgate.errors import ImageRejected
from pixelgate.media.cpu import run_cpu
from pixelgate.media.images import ProcessedImage, process_image_sync

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

__all__ = [
    "SVG_CONTENT_TYPE",
    "is_svg",
    "process_svg",
    "process_svg_sync",
    "rasterizer_available",
    "sanitize_svg",
]

SVG_CONTENT_TYPE = "image/svg+xml"
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
#: size used when the SVG declares neither width/height nor a viewBox
DEFAULT_SIDE = 1024
UNSUPPORTED = "unsupported_image"
TOO_LARGE = "image_too_large"
NO_RASTERIZER = "svg_rasterizer_unavailable"

#: the SVG elements kept; anything else (script, foreignObject, iframe, animate...) goes
ALLOWED_ELEMENTS = frozenset(
    {
        "svg", "g", "defs", "symbol", "use", "title", "desc", "metadata",
        "path", "rect", "circle", "ellipse", "line", "polyline", "polygon",
        "text", "tspan", "textPath",
        "linearGradient", "radialGradient", "stop", "pattern", "clipPath", "mask", "marker",
        "filter", "feBlend", "feColorMatrix", "feComponentTransfer", "feComposite",
        "feFlood", "feGaussianBlur", "feMerge", "feMergeNode", "feMorphology", "feOffset",
        "feFuncA", "feFuncR", "feFuncG", "feFuncB", "feDropShadow",
        "image", "style",
    }
)  # fmt: skip
_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
_IMPORT = re.compile(r"@import|expression\s*\(|javascript:", re.IGNORECASE)
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(px)?\s*$")
_SAFE_DATA = re.compile(r"^data:image/(png|jpeg|webp|gif);base64,", re.IGNORECASE)
_HREFS = ("href", f"{{{XLINK_NS}}}href")


def is_svg(data: builtins.bytes) -> bool:
    """True when the bytes look like an SVG document (XML prolog or an ``<svg`` root)."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return (
        head.startswith(b"<svg")
        or (head.startswith(b"<?xml") and b"<svg" in head)
        or (head.startswith(b"<!--") and b"<svg" in data[:4096].lower())
    )


@functools.cache
def rasterizer_available() -> bool:
    """Whether PNG/WebP can be made from SVG here (CairoSVG and the cairo library)."""
    if importlib.util.find_spec("cairosvg") is None:
        return False
    try:
        import cairosvg  # noqa: F401
    except (ImportError, OSError):  # cairocffi raises OSError without libcairo
        return False
    return True


def sanitize_svg(data: builtins.bytes, *, max_bytes: int) -> tuple[builtins.bytes, int, int]:
    """The document rebuilt from the allow-list, and its width and height in pixels.

    Raises:
        ImageRejected: over ``max_bytes``, not well-formed, DTD/entities, or not SVG.
    """
    if len(data) > max_bytes:
        raise ImageRejected(
            f"image is {len(data)} bytes, over the limit of {max_bytes}", code=TOO_LARGE
        )
    # the XML parser loads at the first SVG, not at every start
    import xml.etree.ElementTree as ET

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(data, forbid_dtd=True)
    except (DefusedXmlException, ET.ParseError, ValueError) as exc:
        raise ImageRejected(f"SVG could not be parsed: {exc}", code=UNSUPPORTED) from None
    if _local(root.tag) != "svg":
        raise ImageRejected("not an SVG document", code=UNSUPPORTED)
    _clean(root)
    width, height = _dimensions(root)
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    out = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out, width, height


def process_svg_sync(
    data: builtins.bytes, *, want_format: str, max_bytes: int, max_pixels: int
) -> ProcessedImage:
    """Sanitised SVG for ``svg``; a raster of the sanitised SVG for any other format.

    Raises:
        ImageRejected: bad SVG, too large, or ``svg_rasterizer_unavailable``.
    """
    clean, width, height = sanitize_svg(data, max_bytes=max_bytes)
    if want_format == "svg":
        return ProcessedImage(
            data=clean,
            width=width,
            height=height,
            format="svg",
            content_type=SVG_CONTENT_TYPE,
            sha256=hashlib.sha256(clean).hexdigest(),
            bytes=len(clean),
        )
    if width * height > max_pixels:
        raise ImageRejected(
            f"SVG renders at {width}x{height}, over the limit of {max_pixels} pixels",
            code=TOO_LARGE,
        )
    if not rasterizer_available():
        raise ImageRejected(
            f"this model makes SVG; {want_format} needs the SVG rasteriser "
            "(pip install 'pixelgate[svg]') - ask for format svg instead",
            code=NO_RASTERIZER,
        )
    import cairosvg

    # unsafe=False (the default) keeps cairosvg from resolving files or entities
    try:
        png = cairosvg.svg2png(bytestring=clean, output_width=width, output_height=height)
    except Exception as exc:  # cairo/tinycss2/cssselect2 raise many types on bad input
        raise ImageRejected(
            f"SVG could not be rasterised: {type(exc).__name__}", code=UNSUPPORTED
        ) from None
    return process_image_sync(
        png, want_format=want_format, max_bytes=max_bytes, max_pixels=max_pixels
    )


async def process_svg(
    data: builtins.bytes, *, want_format: str, max_bytes: int, max_pixels: int
) -> ProcessedImage:
    """:func:`process_svg_sync` in the CPU pool."""
    return await run_cpu(
        process_svg_sync,
        data,
        want_format=want_format,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
    )


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def _clean(element: ET.Element) -> None:
    for child in list(element):
        tag = child.tag if isinstance(child.tag, str) else ""
        # comments/processing instructions, foreign namespaces and non-listed elements go
        if _namespace(tag) not in ("", SVG_NS) or _local(tag) not in ALLOWED_ELEMENTS:
            element.remove(child)
            continue
        _clean(child)
    for name in list(element.attrib):
        if not _attribute_ok(_local(element.tag), name, element.attrib[name]):
            del element.attrib[name]
    if _local(element.tag) == "style" and element.text and _unsafe_css(element.text):
        element.text = ""


def _attribute_ok(tag: str, name: str, value: str) -> bool:
    local = _local(name)
    if local.lower().startswith("on"):
        return False
    if _namespace(name) not in ("", XLINK_NS, "http://www.w3.org/XML/1998/namespace"):
        return False
    if name in _HREFS:
        target = value.strip()
        return target.startswith("#") or (tag == "image" and bool(_SAFE_DATA.match(target)))
    return not _unsafe_css(value)


def _unsafe_css(text: str) -> bool:
    if _IMPORT.search(text):
        return True
    return any(not target.strip().startswith("#") for _, target in _URL.findall(text))


def _dimensions(root: ET.Element) -> tuple[int, int]:
    width = _length(root.get("width"))
    height = _length(root.get("height"))
    box = (root.get("viewBox") or "").replace(",", " ").split()
    if len(box) == 4:
        try:
            box_w, box_h = float(box[2]), float(box[3])
        except ValueError:
            box_w = box_h = 0.0
        if box_w > 0 and box_h > 0:
            if width is None and height is None:
                width, height = box_w, box_h
            elif width is None and height is not None:
                width = height * box_w / box_h
            elif height is None and width is not None:
                height = width * box_h / box_w
    return max(1, round(width or DEFAULT_SIDE)), max(1, round(height or DEFAULT_SIDE))


def _length(value: str | None) -> float | None:
    if not value:
        return None
    match = _LENGTH.match(value)
    if match is None:
        return None
    number = float(match.group(1))
    return number if number > 0 else None
