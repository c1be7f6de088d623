"""Helpers adapters share: the nearest allowed aspect ratio, n calls kept partially, and
images that arrive as base64 or ``data:`` URIs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pixelgate.errors import ProviderError, Refused, Transient

__all__ = [
    "decode_data_uri",
    "decode_image",
    "gather_partial",
    "nearest_aspect_ratio",
    "sniff_image_type",
]

T = TypeVar("T")


def _ratio_value(ratio: str | None) -> float | None:
    if not ratio:
        return None
    w, _, h = ratio.partition(":")
    try:
        value = float(w) / float(h)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def nearest_aspect_ratio(
    ratios: Sequence[str], width: int, height: int, aspect_ratio: str | None = None
) -> str:
    """The allowed ``W:H`` ratio closest (in log space) to the request's ratio.

    An asked-for ratio that is allowed wins; otherwise ``aspect_ratio`` (or, without
    one, ``width/height``) is the target.
    """
    if aspect_ratio in ratios:
        return aspect_ratio  # type: ignore[return-value]
    target = _ratio_value(aspect_ratio) or max(width, 1) / max(height, 1)
    return min(ratios, key=lambda r: abs(math.log((_ratio_value(r) or 1.0) / target)))


async def gather_partial(
    calls: Sequence[Callable[[], Awaitable[T]]],
) -> tuple[list[T], list[ProviderError]]:
    """Run the calls at once; keep what succeeded, raise only if nothing did.

    With nothing to return, a retryable or actionable error wins over a refusal, since
    a refusal of one try says less about the prompt than an outage does.
    """
    outcomes = await asyncio.gather(*(call() for call in calls), return_exceptions=True)
    results: list[T] = []
    failures: list[ProviderError] = []
    for outcome in outcomes:
        if isinstance(outcome, ProviderError):
            failures.append(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.append(outcome)
    if not results:
        others = [f for f in failures if not isinstance(f, Refused)]
        raise (others or failures)[0]
    return results, failures


def decode_image(provider: str, data: str) -> bytes:
    """Bytes of a base64 image; a malformed or empty one is ``Transient``."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Transient(f"{provider}: image is not valid base64", provider=provider) from None
    if not raw:
        raise Transient(f"{provider}: empty image", provider=provider)
    return raw


def decode_data_uri(provider: str, uri: str) -> tuple[bytes, str | None]:
    """Bytes and declared content type of a ``data:<type>;base64,<payload>`` URI."""
    header, _, payload = uri.partition(",")
    content_type = header.removeprefix("data:").split(";")[0] or None
    return decode_image(provider, payload), content_type


def sniff_image_type(data: bytes, default: str = "application/octet-stream") -> str:
    """The content type that an image's first bytes announce (PNG, JPEG, WebP)."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return default
