"""The OpenAI image models: sizes, price tables, capabilities, and how a request's size
and quality map onto what each model takes (PROVIDERS.md §1)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from pixelgate.providers.base import Capabilities, ProviderRequest

#: gpt-image-1 output is billed per token: $40 per 1M image-output tokens (PROVIDERS.md §1)
TOKEN_PRICE_USD: dict[str, Decimal] = {"gpt-image-1": Decimal("40") / Decimal(1_000_000)}

Size = tuple[int, int]
GPT_SIZES: tuple[Size, ...] = ((1024, 1024), (1536, 1024), (1024, 1536))
DALLE3_SIZES: tuple[Size, ...] = ((1024, 1024), (1792, 1024), (1024, 1792))
DALLE2_SIZES: tuple[Size, ...] = ((256, 256), (512, 512), (1024, 1024))
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def price_table(
    rows: dict[str, tuple[str, ...]], sizes: tuple[Size, ...]
) -> dict[tuple[str, Size], Decimal]:
    return {
        (quality, size): Decimal(price)
        for quality, prices in rows.items()
        for size, price in zip(sizes, prices, strict=True)
    }


# Prices in USD per output image, by (quality, size); sizes in the order of the *_SIZES tuples.
# gpt-image-1 and dall-e-3: PROVIDERS.md §1 (snapshot 2026-08-21; dall-e-3 *observed*).
# gpt-image-1-mini and dall-e-2 are not in PROVIDERS.md: openai.com/api/pricing as quoted by
# llmreference.com (2026-05-10) and a public pricing table (2023-12-25). Dated hints only.
PRICES: dict[str, dict[tuple[str, Size], Decimal]] = {
    "gpt-image-1": price_table(
        {
            "low": ("0.011", "0.016", "0.016"),
            "medium": ("0.042", "0.063", "0.063"),
            "high": ("0.167", "0.25", "0.25"),
        },
        GPT_SIZES,
    ),
    "gpt-image-1-mini": price_table(
        {
            "low": ("0.005", "0.006", "0.006"),
            "medium": ("0.011", "0.015", "0.015"),
            "high": ("0.036", "0.052", "0.052"),
        },
        GPT_SIZES,
    ),
    "dall-e-3": price_table(
        {"standard": ("0.04", "0.08", "0.08"), "hd": ("0.08", "0.12", "0.12")}, DALLE3_SIZES
    ),
    "dall-e-2": price_table({"standard": ("0.016", "0.018", "0.02")}, DALLE2_SIZES),
}

Family = Literal["gpt-image", "dall-e-3", "dall-e-2", "compat"]


@dataclass(frozen=True)
class Spec:
    family: Family
    sizes: tuple[Size, ...]
    #: quality the price table uses when the request names none (gpt-image "auto" is priced
    #: as "high": an upper bound, so admission never reserves too little)
    default_quality: str
    prices: dict[tuple[str, Size], Decimal] = field(default_factory=dict)


SPECS: dict[str, Spec] = {
    "gpt-image-1": Spec("gpt-image", GPT_SIZES, "high", PRICES["gpt-image-1"]),
    "gpt-image-1-mini": Spec("gpt-image", GPT_SIZES, "high", PRICES["gpt-image-1-mini"]),
    "dall-e-3": Spec("dall-e-3", DALLE3_SIZES, "standard", PRICES["dall-e-3"]),
    "dall-e-2": Spec("dall-e-2", DALLE2_SIZES, "standard", PRICES["dall-e-2"]),
}

GPT_CAPS = Capabilities(
    edit=True,
    mask=True,
    reference_image=True,
    transparency=True,
    sizes=GPT_SIZES,
    max_n=10,
    output_formats=("png", "jpeg", "webp"),
    max_width=1536,
    max_height=1536,
)
CAPS: dict[str, Capabilities] = {
    "gpt-image-1": GPT_CAPS,
    "gpt-image-1-mini": GPT_CAPS,
    "dall-e-3": Capabilities(sizes=DALLE3_SIZES, max_n=1, max_width=1792, max_height=1792),
    "dall-e-2": Capabilities(
        edit=True, mask=True, sizes=DALLE2_SIZES, max_n=10, max_width=1024, max_height=1024
    ),
}
DESCRIPTIONS = {
    "gpt-image-1": "GPT Image 1: generate and edit, transparency, up to 10 images",
    "gpt-image-1-mini": "GPT Image 1 mini: cheaper GPT Image 1",
    "dall-e-3": "DALL·E 3: one image per request, vivid/natural style",
    "dall-e-2": "DALL·E 2: square sizes, edits with a mask",
}


@functools.lru_cache(maxsize=1024)
def nearest_size(
    sizes: tuple[Size, ...], width: int, height: int, aspect_ratio: str | None = None
) -> Size:
    """The allowed size closest in aspect ratio to the request, then closest in area
    (cached: the pricing and the call of every request ask, ~20 µs each time)."""
    if not sizes:
        return (width, height)
    target = _ratio(width, height, aspect_ratio)
    area = max(width * height, 1)

    def distance(size: Size) -> tuple[float, float]:
        ratio_gap = abs(math.log(size[0] / size[1]) - math.log(target))
        return (round(ratio_gap, 6), abs(math.log(size[0] * size[1] / area)))

    return min(sizes, key=distance)


def _ratio(width: int, height: int, aspect_ratio: str | None) -> float:
    if aspect_ratio:
        w, _, h = aspect_ratio.partition(":")
        try:
            value = float(w) / float(h)
        except (ValueError, ZeroDivisionError):
            value = 0.0
        if value > 0:
            return value
    return max(width, 1) / max(height, 1)


def price_quality(spec: Spec, quality: str | None) -> str:
    api = api_quality(spec, quality)
    if api is None or api == "auto":
        return spec.default_quality
    return api


def api_quality(spec: Spec, quality: str | None) -> str | None:
    """The request's quality in the model's vocabulary; None leaves the API default."""
    if quality is None:
        return None
    q = quality.lower()
    if spec.family == "gpt-image":
        return {"standard": "medium", "hd": "high"}.get(q, q if q in _GPT_QUALITIES else None)
    if spec.family == "dall-e-3":
        return "hd" if q in ("hd", "high") else "standard"
    if spec.family == "compat":
        return quality
    return None


_GPT_QUALITIES = frozenset({"low", "medium", "high", "auto"})


def streams(spec: Spec, request: ProviderRequest) -> bool:
    """Stream when previews are wanted: GPT image models, one image (OpenAI's partial
    events do not say which of several images they belong to)."""
    return spec.family == "gpt-image" and request.partial_images > 0 and request.n == 1
