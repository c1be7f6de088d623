"""Helpers adapters share: the nearest allowed aspect ratio, and n calls kept partially."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pixelgate.errors import ProviderError, Refused

__all__ = ["gather_partial", "nearest_aspect_ratio"]

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
