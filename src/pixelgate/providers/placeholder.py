"""The built-in offline provider: deterministic images drawn from the prompt and seed.

It needs no key and no network. It is the default provider when none is configured,
the "default image" of the seed-001 API, the provider of the benchmarks and chaos
tests, and the test fake of the pipeline. ``latency_ms`` and ``fail_rate`` /
``fail_kind`` inject slowness and failures.
"""

from __future__ import annotations

import asyncio
import colorsys
import functools
import hashlib
import io
import random
import threading
import zlib
from collections import OrderedDict
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from pixelgate.media.cpu import run_cpu
from pixelgate.media.png import stored_png
from pixelgate.providers._glyphs import draw_line
from pixelgate.providers.base import (
    Capabilities,
    InvalidRequest,
    JobContext,
    ModelInfo,
    Provider,
    ProviderError,
    ProviderImage,
    ProviderRateLimited,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
    ProviderTimeout,
    Refused,
    Transient,
)

if TYPE_CHECKING:
    from PIL import Image, ImageFont

__all__ = [
    "MODEL",
    "PlaceholderProvider",
    "PlaceholderSettings",
    "cached_placeholder",
    "render_placeholder",
]


MODEL = "placeholder-1"
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
LATENCY_STEPS = 4
SEED_BITS = 32
FailKind = Literal["transient", "timeout", "rate_limited", "refused", "invalid"]

CAPABILITIES = Capabilities(
    generate=True,
    edit=True,
    mask=True,
    reference_image=True,
    transparency=True,
    negative_prompt=True,
    seed=True,
    sizes=(),
    aspect_ratios=(),
    max_n=10,
    output_formats=("png", "jpeg", "webp"),
    max_width=4096,
    max_height=4096,
)


class PlaceholderSettings(ProviderSettings):
    """``[providers.NAME]`` with ``kind = "placeholder"``."""

    kind: str = "placeholder"
    latency_ms: int = Field(0, ge=0)
    #: report progress while waiting (off: a provider without native progress)
    report_progress: bool = True
    fail_rate: float = Field(0.0, ge=0, le=1)
    fail_kind: FailKind = "transient"
    #: a pretend price per image (USD), for demos and billing tests
    price_usd: Decimal = Field(Decimal("0"), ge=0)


class PlaceholderProvider(Provider):
    """Draws a deterministic gradient image with the prompt written on it."""

    kind = "placeholder"
    settings_class = PlaceholderSettings
    needs_key = False
    key_env = None

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {
            MODEL: ModelInfo(
                name=MODEL,
                capabilities=CAPABILITIES,
                price_usd=self.placeholder_settings.price_usd,
                description="Offline deterministic placeholder images",
            )
        }

    @property
    def placeholder_settings(self) -> PlaceholderSettings:
        settings = self.settings
        if isinstance(settings, PlaceholderSettings):
            return settings
        return PlaceholderSettings.model_validate(settings.model_dump())

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        """Wait ``latency_ms`` (reporting progress), maybe fail, then render ``n`` images."""
        settings = self.placeholder_settings
        self._check(request)
        if settings.latency_ms > 0:
            step = settings.latency_ms / 1000 / LATENCY_STEPS
            for i in range(1, LATENCY_STEPS + 1):
                await asyncio.sleep(step)
                if i < LATENCY_STEPS and settings.report_progress:
                    await ctx.progress(100 * i // LATENCY_STEPS)
        if settings.fail_rate > 0 and random.random() < settings.fail_rate:
            raise self._failure(settings.fail_kind)
        seed = request.seed if request.seed is not None else derive_seed(request.prompt)
        # each image gets its own seed, so re-running with a recorded seed reproduces it
        seeds = [seed + index for index in range(request.n)]
        transparent = request.background == "transparent" and request.format != "jpeg"
        label = "edit" if request.edit_image is not None else None
        drawing: dict[str, Any] = {
            "width": request.width,
            "height": request.height,
            "fmt": request.format,
            "label": label,
            "transparent": transparent,
        }
        render = functools.partial(render_placeholder, request.prompt, **drawing)
        if len(seeds) == 1:  # the usual case: no task and gather around one render
            hit = cached_placeholder(request.prompt, seed=seeds[0], **drawing)
            blobs = [hit if hit is not None else await run_cpu(render, seed=seeds[0])]
        else:
            blobs = await asyncio.gather(*(run_cpu(render, seed=s) for s in seeds))
        content_type = CONTENT_TYPES[request.format]
        images = [
            ProviderImage(data=data, content_type=content_type, seed=image_seed)
            for data, image_seed in zip(blobs, seeds, strict=True)
        ]
        cost = self.placeholder_settings.price_usd * len(images)
        return ProviderResult(images=images, model=MODEL, cost_usd=cost)

    def _check(self, request: ProviderRequest) -> None:
        caps = self.model_info(request.model).capabilities
        if request.format not in caps.output_formats:
            raise InvalidRequest(
                f"{self.name}: unsupported format {request.format!r}", provider=self.name
            )
        if not (1 <= request.width <= caps.max_width and 1 <= request.height <= caps.max_height):
            raise InvalidRequest(
                f"{self.name}: size {request.width}x{request.height} out of range "
                f"(max {caps.max_width}x{caps.max_height})",
                provider=self.name,
            )
        if not 1 <= request.n <= caps.max_n:
            raise InvalidRequest(f"{self.name}: n must be 1..{caps.max_n}", provider=self.name)

    def _failure(self, kind: FailKind) -> ProviderError:
        message = f"{self.name}: placeholder: injected {kind} failure"
        if kind == "timeout":
            return ProviderTimeout(message, provider=self.name)
        if kind == "rate_limited":
            return ProviderRateLimited(message, provider=self.name, retry_after=1, status_code=429)
        if kind == "refused":
            return Refused(message, provider=self.name)
        if kind == "invalid":
            return InvalidRequest(message, provider=self.name, status_code=400)
        return Transient(message, provider=self.name, status_code=503)


def derive_seed(prompt: str) -> int:
    """The seed used when the request gives none: stable for a prompt."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:4], "big") % (1 << (SEED_BITS - 1))


# --- rendering ---------------------------------------------------------------------------

_BACKGROUND_MAX = 512
#: the background's size against the image's, at most
_BACKGROUND_SCALE = 0.25
_SHAPES = 6
_MIN_FONT_PX = 9
_MIN_TEXT_SIDE = 64
_BALANCE_STEPS = 8
_CARD = (12, 14, 24)
_CARD_ALPHA = 125
_TEXT = (255, 255, 255, 245)
_FOOTER = (255, 255, 255, 200)
_MAX_PROMPT_LINES = 4
_ELLIPSIS = "…"
_CACHE_MAX_ENTRIES = 32
#: PNGs of at most this many pixels (128x128: 48-64 KB) are stored without deflate
_STORED_PNG_PIXELS = 128 * 128
_CACHE_MAX_ITEM_BYTES = 1 << 20

_cache: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
_cache_lock = threading.Lock()


def render_placeholder(
    prompt: str,
    *,
    width: int,
    height: int,
    fmt: str = "png",
    seed: int | None = None,
    index: int = 0,
    label: str | None = None,
    transparent: bool = False,
) -> bytes:
    """Draw the placeholder image; the same arguments always give the same bytes.

    Args:
        prompt: written on the image (wrapped, truncated with an ellipsis).
        width: image width in pixels.
        height: image height in pixels.
        fmt: ``png``, ``jpeg`` or ``webp``.
        seed: mixed into the colours and shapes; shown in the footer.
        index: the image's index within a request, mixed in like the seed.
        label: a short tag drawn in the top-left corner (e.g. ``edit``).
        transparent: no background gradient (ignored for JPEG).
    """
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unsupported placeholder format {fmt!r}")
    key = (prompt, width, height, fmt, seed, index, label, transparent)
    cached = _cached(key)
    if cached is not None:
        return cached
    data = _render(prompt, width, height, fmt, seed, index, label, transparent and fmt != "jpeg")
    if len(data) <= _CACHE_MAX_ITEM_BYTES:
        with _cache_lock:
            _cache[key] = data
            while len(_cache) > _CACHE_MAX_ENTRIES:
                _cache.popitem(last=False)
    return data


def cached_placeholder(
    prompt: str,
    *,
    width: int,
    height: int,
    fmt: str = "png",
    seed: int | None = None,
    index: int = 0,
    label: str | None = None,
    transparent: bool = False,
) -> bytes | None:
    """What :func:`render_placeholder` would return, if it is in its cache; else None.

    A hit costs microseconds: a caller on the event loop asks here before it hands the
    drawing to a thread (the hand-over costs ~30 times more than the hit)."""
    return _cached((prompt, width, height, fmt, seed, index, label, transparent))


def _cached(key: tuple[object, ...]) -> bytes | None:
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
        return cached


def _render(
    prompt: str,
    width: int,
    height: int,
    fmt: str,
    seed: int | None,
    index: int,
    label: str | None,
    transparent: bool,
) -> bytes:
    from PIL import Image  # loaded at the first placeholder image

    digest = hashlib.sha256(f"{prompt}\x00{seed}\x00{index}".encode()).digest()
    digest += hashlib.sha256(digest).digest()  # 64 bytes: enough for palette and shapes
    palette = _palette(digest)
    # The background is smooth everywhere, so it is drawn small and scaled up once:
    # a 4096x4096 image costs one resize instead of several full-size composites, and
    # a 64x64 one a 16x16 blur instead of a 64x64 one (the blur was a fifth of its cost)
    scale = min(_BACKGROUND_SCALE, _BACKGROUND_MAX / max(width, height))
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    if transparent:
        bg = Image.new("RGBA", small, (0, 0, 0, 0))
    else:
        bg = _gradient(small, palette[0], palette[1], flip=bool(digest[3] & 1)).convert("RGBA")
    bg.alpha_composite(_shapes(small, digest, palette))
    if not transparent:
        bg = _vignette(bg).convert("RGB")
    img = bg if small == (width, height) else bg.resize((width, height), Image.Resampling.BICUBIC)
    _draw_text(img, prompt, seed, label)
    return _encode(img, fmt)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _palette(digest: bytes) -> list[tuple[int, int, int]]:
    """Two gradient stops and three accents, harmonised around one hue."""
    hue = digest[0] / 256
    spread = 0.12 + digest[1] / 255 * 0.22
    sat = 0.55 + digest[2] / 255 * 0.25
    return [
        _hsv(hue, sat, 0.96),
        _hsv(hue + spread, min(1.0, sat + 0.2), 0.68),
        _hsv(hue - spread, sat * 0.8, 1.0),
        _hsv(hue + spread * 1.6, sat, 0.95),
        _hsv(hue + 0.5, sat * 0.6, 1.0),
    ]


def _gradient(
    size: tuple[int, int], start: tuple[int, int, int], end: tuple[int, int, int], *, flip: bool
) -> Image.Image:
    """A smooth diagonal blend from ``start`` to ``end``."""
    from PIL import Image  # loaded at the first placeholder image

    mask = _diagonal_mask(size, flip)
    return Image.composite(Image.new("RGB", size, end), Image.new("RGB", size, start), mask)


@functools.lru_cache(maxsize=64)
def _diagonal_mask(size: tuple[int, int], flip: bool) -> Image.Image:
    from PIL import Image  # loaded at the first placeholder image

    vertical = Image.linear_gradient("L")
    horizontal = vertical.transpose(Image.Transpose.ROTATE_90)
    if flip:
        horizontal = horizontal.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    from PIL import ImageChops  # the drawing modules load at the first placeholder image

    mask = ImageChops.add(vertical, horizontal, scale=2.0)
    return mask.resize(size, Image.Resampling.BILINEAR)


def _shapes(
    size: tuple[int, int], digest: bytes, palette: list[tuple[int, int, int]]
) -> Image.Image:
    """Soft translucent circles placed by the hash."""
    from PIL import Image, ImageDraw, ImageFilter  # loaded at the first placeholder image

    width, height = size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    short = min(size)
    for i in range(_SHAPES):
        b = digest[4 + i * 5 : 9 + i * 5]
        cx = b[0] / 255 * width
        cy = b[1] / 255 * height
        radius = short * (0.10 + b[2] / 255 * 0.32)
        colour = palette[2 + b[3] % 3]
        alpha = 45 + b[4] % 70
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(*colour, alpha))
    return layer.filter(ImageFilter.GaussianBlur(max(1.0, short / 30)))


def _vignette(img: Image.Image) -> Image.Image:
    img.alpha_composite(_vignette_shade(img.size))
    return img


@functools.lru_cache(maxsize=64)
def _vignette_shade(size: tuple[int, int]) -> Image.Image:
    from PIL import Image  # loaded at the first placeholder image

    # cached per size: the shade depends on nothing else (the cache holds small images,
    # the background is drawn at most _BACKGROUND_MAX wide)
    mask = Image.radial_gradient("L").resize(size, Image.Resampling.BILINEAR)
    mask = mask.point(lambda v: min(255, v * v // 1300))
    shade = Image.new("RGBA", size, (0, 0, 0, 255))
    shade.putalpha(mask)
    return shade


_fonts = threading.local()


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The default font at ``px``, loaded once per size and thread (a FreeType face is
    not shared between threads; loading it costs more than drawing a small image)."""
    cache: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] | None
    cache = getattr(_fonts, "by_size", None)
    if cache is None:
        cache = _fonts.by_size = {}
    font = cache.get(px)
    if font is None:
        font = cache[px] = _load_font(px)
    return font


def _load_font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # FreeType and its fonts load at the first placeholder image, not at every start
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


@functools.lru_cache(maxsize=1024)
def _text_width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> float:
    """The advance of ``text``, remembered: the wrap, the card and the centring measure
    the same lines again (a font belongs to one thread, so the key does too)."""
    return font.getlength(text)


def _wrap(
    text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: float, lines: int
) -> list[str]:
    """Greedy word wrap by measured width; the last line ends with an ellipsis if cut."""
    words = " ".join(text.split()).split(" ")
    out: list[str] = []
    line = ""
    i = 0
    while i < len(words) and len(out) < lines:
        word = words[i]
        candidate = f"{line} {word}" if line else word
        if _text_width(font, candidate) <= max_width:
            line = candidate
            i += 1
            continue
        if not line:  # a single word wider than the line: cut it
            line = _fit(word, font, max_width)
            i += 1
        out.append(line)
        line = ""
    if line and len(out) < lines:
        out.append(line)
    if i < len(words) and out:
        out[-1] = _fit(out[-1] + _ELLIPSIS, font, max_width, force_ellipsis=True)
    return out


def _fit(
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    max_width: float,
    *,
    force_ellipsis: bool = False,
) -> str:
    if _text_width(font, text) <= max_width:
        return text
    body = text.removesuffix(_ELLIPSIS) if force_ellipsis else text
    while body and _text_width(font, body.rstrip() + _ELLIPSIS) > max_width:
        body = body[:-1]
    return body.rstrip() + _ELLIPSIS


def _balanced_wrap(
    text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: float, lines: int
) -> list[str]:
    """Wrap into as few lines as fit, then narrow the lines so they have similar lengths."""
    best = _wrap(text, font, max_width, lines)
    if len(best) < 2 or any(line.endswith(_ELLIPSIS) for line in best):
        return best
    lo, hi = max_width / 3, max_width
    for _ in range(_BALANCE_STEPS):
        mid = (lo + hi) / 2
        trial = _wrap(text, font, mid, lines)
        if len(trial) == len(best) and not any(line.endswith(_ELLIPSIS) for line in trial):
            best, hi = trial, mid
        else:
            lo = mid
    return best


def _draw_text(img: Image.Image, prompt: str, seed: int | None, label: str | None) -> None:
    """The prompt on a translucent card, the footer, and the label, if they fit."""
    from PIL import Image  # loaded at the first placeholder image

    if img.mode == "RGB":
        # an RGBA pen on an RGB image blends, so no full-size overlay is needed
        _draw_text_on(img, prompt, seed, label)
        return
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    if _draw_text_on(overlay, prompt, seed, label):
        img.alpha_composite(overlay)


def _card(img: Image.Image, box: tuple[float, float, float, float], radius: float) -> None:
    """A translucent dark rounded rectangle, blended in one pass (no overlapping parts)."""
    x0, y0 = round(box[0]), round(box[1])
    x1, y1 = round(box[2]), round(box[3])
    img.paste(_CARD, (x0, y0), _card_mask(x1 - x0, y1 - y0, round(radius)))


@functools.lru_cache(maxsize=256)
def _card_mask(width: int, height: int, radius: int) -> Image.Image:
    """The card's shape, drawn once per size (cards of one image size vary little)."""
    from PIL import Image, ImageDraw  # loaded at the first placeholder image

    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rounded_rectangle(
        (0, 0, width - 1, height - 1), radius=radius, fill=_CARD_ALPHA
    )
    return mask


def _draw_text_on(img: Image.Image, prompt: str, seed: int | None, label: str | None) -> bool:
    from PIL import ImageDraw  # loaded at the first placeholder image

    width, height = img.size
    draw = ImageDraw.Draw(img, "RGBA")
    short = min(width, height)
    drew = False

    px = round(min(width, height * 1.6) / 22)
    if short >= _MIN_TEXT_SIDE:
        px = max(px, _MIN_FONT_PX)
    if px >= _MIN_FONT_PX and prompt.strip():
        font = _font(px)
        line_h = round(px * 1.3)
        pad = round(px * 0.9)
        max_lines = min(_MAX_PROMPT_LINES, (height * 6 // 10 - 2 * pad) // line_h)
        lines = (
            _balanced_wrap(prompt, font, width * 0.8 - 2 * pad, max_lines) if max_lines > 0 else []
        )
        if lines:
            text_w = max(_text_width(font, line) for line in lines)
            box_w = text_w + 2 * pad
            box_h = len(lines) * line_h + 2 * pad - (line_h - px)
            x0 = (width - box_w) / 2
            y0 = (height - box_h) / 2
            _card(img, (x0, y0, x0 + box_w, y0 + box_h), pad * 0.7)
            for n, line in enumerate(lines):
                x = (width - _text_width(font, line)) / 2
                draw_line(draw, (x, y0 + pad + n * line_h), line, font, _TEXT)
            drew = True

    small_px = max(_MIN_FONT_PX, round(short / 44))
    margin = max(4, round(short / 36))
    if height >= 8 * small_px and width >= 12 * small_px:
        font = _font(small_px)
        seed_text = "-" if seed is None else str(seed)
        footer = f"pixelgate placeholder · seed {seed_text} · {width}x{height}"
        footer_w = _text_width(font, footer)
        if footer_w <= width - 2 * margin:
            y = height - margin - round(small_px * 1.15)
            draw_line(draw, ((width - footer_w) / 2, y), footer, font, _FOOTER)
            drew = True
        if label:
            lpad = small_px // 2
            at = (margin + lpad, margin + lpad)
            left, top, right, bottom = draw.textbbox(at, label, font=font)
            _card(img, (left - lpad, top - lpad, right + lpad, bottom + lpad), lpad)
            draw_line(draw, at, label, font, _TEXT)
            drew = True
    return drew


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.convert("RGB").save(buf, format="JPEG", quality=90)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=90)
    elif img.width * img.height <= _STORED_PNG_PIXELS:
        # a small image is stored, not deflated: deflating and inflating it again (the
        # gateway checks every image) cost more than its bytes (64x64: 12 KB, not 3 KB);
        # written by hand, a quarter of Pillow's fixed cost for such an image
        return stored_png(img)
    else:
        # run-length matching only: smaller than zlib's default strategy on these
        # smooth, filtered images, and no slower (256x256: 26.8 KB, not 32.5 KB)
        img.save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buf.getvalue()
