"""Route planning: which providers to try, in which order, and why others were skipped."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from pixelgate.core.models import GenerationRequest
from pixelgate.errors import ProviderError, ValidationFailed
from pixelgate.providers.base import Provider
from pixelgate.providers.registry import ProviderSet

__all__ = ["Candidate", "RetryPolicy", "plan_route", "supports"]


@dataclass
class Candidate:
    provider: Provider
    model: str
    reason: str


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter (seed 004: 1 s, 2 s, 4 s; three attempts)."""

    attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    jitter: float = 0.1

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        backoff = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        backoff *= 1 + random.uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            return max(backoff, retry_after)
        return backoff


def supports(provider: Provider, model: str, request: GenerationRequest) -> str | None:
    """``None`` when the model can serve the request, else why not."""
    info = provider.models.get(model)
    if info is None:
        return f"unknown model {model!r}"
    caps = info.capabilities
    width, height = request.dimensions()
    if request.n > caps.max_n:
        return f"n={request.n} above the model's maximum {caps.max_n}"
    if width > caps.max_width or height > caps.max_height:
        return f"{width}x{height} larger than {caps.max_width}x{caps.max_height}"
    if request.has_reference_image() and not caps.reference_image:
        return "no reference image support"
    if request.has_input_image() and not caps.edit:
        return "no image edit support"
    if request.has_mask() and not caps.mask:
        return "no mask support"
    if request.background == "transparent" and not caps.transparency:
        return "no transparency support"
    return None


def plan_route(
    request: GenerationRequest,
    providers: ProviderSet,
    *,
    preferred: list[str] | None = None,
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Candidates in order plus the decision trace (chosen and skipped, with reasons).

    Explicit request → the account's preferred providers → the configured fallback chain.
    """
    explicit = request.candidate_names()
    if explicit:
        names, reason = explicit, "requested"
    elif preferred:
        names, reason = list(preferred) + providers.default_chain, "preferred"
    else:
        names, reason = providers.default_chain, "fallback_chain"
    trace: list[dict[str, Any]] = []
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        provider = providers.find(name)
        if provider is None:
            trace.append({"provider": name, "decision": "skipped", "reason": "unknown provider"})
            continue
        model = request.model if (request.model and explicit) else provider.default_model
        if not provider.configured:
            trace.append({"provider": name, "decision": "skipped", "reason": "not configured"})
            continue
        why_not = supports(provider, model, request)
        if why_not:
            trace.append(
                {"provider": name, "model": model, "decision": "skipped", "reason": why_not}
            )
            continue
        candidates.append(Candidate(provider=provider, model=model, reason=reason))
        trace.append({"provider": name, "model": model, "decision": "candidate", "reason": reason})
        if reason == "preferred" and name in providers.default_chain:
            reason = "fallback_chain"
    return candidates, trace


def check_explicit(request: GenerationRequest, providers: ProviderSet) -> None:
    """Admission-time check of explicitly named providers and models (422 naming the field)."""
    field_name = "provider" if request.provider else "providers"
    for name in request.candidate_names():
        provider = providers.find(name)
        if provider is None:
            raise ValidationFailed(
                field_name, f"unknown provider {name!r}", code="unknown_provider"
            )
        if not provider.configured:
            raise ValidationFailed(
                field_name, f"provider {name!r} is not configured", code="provider_not_configured"
            )
        if request.model and request.provider:
            if request.model not in provider.models:
                raise ValidationFailed(
                    "model", f"{name!r} has no model {request.model!r}", code="unknown_model"
                )
            why_not = supports(provider, request.model, request)
            if why_not:
                raise ValidationFailed(field_name, why_not, code="unsupported")


@dataclass
class Deadline:
    """An overall time budget for one generation."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    async def sleep(self, delay: float) -> bool:
        """Sleep ``delay`` if the budget allows; False when it would pass the deadline."""
        if delay >= self.remaining():
            return False
        await asyncio.sleep(delay)
        return True


def is_retryable(error: ProviderError) -> bool:
    return error.retryable
