"""Credits for a request (seed 004's rules by default)."""

from __future__ import annotations

from dataclasses import dataclass

from pixelgate.core.models import GenerationRequest

__all__ = ["CreditRules", "credits_for"]

HIGH_RES_THRESHOLD = 1024


@dataclass(frozen=True)
class CreditRules:
    """1 per generation, +1 above 1024 px, +1 per extra variation, +1 with a reference image."""

    base: int = 1
    high_res: int = 1
    per_extra_variation: int = 1
    reference_image: int = 1
    high_res_threshold: int = HIGH_RES_THRESHOLD


def credits_for(request: GenerationRequest, rules: CreditRules | None = None) -> int:
    rules = rules or CreditRules()
    width, height = request.dimensions()
    credits = rules.base
    if max(width, height) > rules.high_res_threshold:
        credits += rules.high_res
    credits += rules.per_extra_variation * (request.n - 1)
    if request.has_reference_image():
        credits += rules.reference_image
    return credits
