"""Route planning and racing: which providers to try, in which order, why others were skipped.

Order of the candidates (DESIGN.md §Routing):

1. **explicit** — the request's ``provider`` or ordered ``providers`` (only those);
2. **preferred** — the account's preferred providers;
3. **policy** — when a policy (``cost``, ``quality``, ``latency``) is chosen by the request,
   the account or the settings: the automatic pool ranked by it (priority first);
4. **fallback chain** — ``routing.default`` ordered by priority.

A provider is skipped — and the trace says why — when it is unknown, not configured,
disabled, cannot do what the request needs, has an open circuit breaker, or costs more
than ``max_cost_per_image``. One the provider itself asked to back off (Retry-After) is
deferred behind the others.

:class:`Race` (:mod:`pixelgate.core.race`, re-exported here) runs the candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pixelgate.config import OutboundLimit, RefusalFallback, RoutingPolicy, RoutingSettings
from pixelgate.core.bounds import MAX_USD, ShortText
from pixelgate.core.models import GenerationRequest
from pixelgate.core.race import Race, RaceFailed
from pixelgate.errors import PriceUnknown, ProviderError, ValidationFailed
from pixelgate.media.svg import rasterizer_available
from pixelgate.money import format_usd
from pixelgate.providers.base import ModelInfo, Provider, ProviderRequest
from pixelgate.providers.registry import PLACEHOLDER, ProviderSet
from pixelgate.resilience.retry import Deadline, RetryPolicy

__all__ = [
    "DEFAULT_QUALITY",
    "OVER_COST_CAP",
    "PRICE_UNKNOWN",
    "AccountRouting",
    "Candidate",
    "Deadline",
    "Race",
    "RaceFailed",
    "RetryPolicy",
    "RouteOptions",
    "check_explicit",
    "known_price",
    "plan_route",
    "resolve_options",
    "supports",
]

log = structlog.get_logger("pixelgate.routing")

#: quality score (0-100) of a provider kind for the ``quality`` policy; a provider's
#: ``routing.providers.<name>.quality`` overrides it
DEFAULT_QUALITY: dict[str, float] = {
    "openai": 90,
    "imagen": 88,
    "gemini": 86,
    "ideogram": 85,
    "stability": 80,
    "fal": 78,
    "replicate": 76,
    "openai_compatible": 70,
    "comfyui": 70,
    "horde": 55,
    "unsplash": 40,
    "placeholder": 0,
}
UNKNOWN_QUALITY = 50.0
#: latency assumed for a provider without observations (the ``latency`` policy)
UNKNOWN_LATENCY_MS = 10_000.0

#: request fields (core/inputs.py) that make a capability a need
_EDIT_FIELDS = ("image_url", "input_image_key")
_MASK_FIELDS = ("mask_url", "input_mask_key")
_REFERENCE_FIELDS = ("reference_image_url", "input_reference_key")

PriceFn = Callable[[Provider, str], Decimal | None]

#: ``code`` of a trace entry skipped for its price: unknown, or above the cost cap
PRICE_UNKNOWN = "price_unknown"
OVER_COST_CAP = "over_cost_cap"


@dataclass
class Candidate:
    """A provider/model the router will try, and the trace entry that tells its story."""

    provider: Provider
    model: str
    reason: str
    estimate_usd: Decimal | None = None
    trace: dict[str, Any] = field(default_factory=dict)


#: providers an account may prefer, in order
MAX_PREFERRED = 64


class AccountRouting(BaseModel):
    """An account's own routing choices: the ``routing`` object of ``accounts.settings``."""

    model_config = ConfigDict(extra="ignore")

    preferred: list[ShortText] = Field(default_factory=list, max_length=MAX_PREFERRED)
    policy: RoutingPolicy | None = None
    fallback_on_refusal: RefusalFallback | None = None
    fallback_image: bool | None = None
    max_cost_per_image: Decimal | None = Field(None, ge=0, le=MAX_USD)
    race: int | None = Field(None, ge=1, le=8)
    hedge: bool | None = None
    #: per provider: this account's own rpm / rate / concurrency on it
    outbound: dict[str, OutboundLimit] = Field(default_factory=dict)

    @classmethod
    def parse(cls, data: dict[str, Any], *, account_id: str = "") -> AccountRouting:
        """Lenient: a broken account setting is logged and ignored, never fatal for a job."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            log.warning("account_routing_invalid", account_id=account_id, error=str(exc))
            return cls()


@dataclass(frozen=True)
class RouteOptions:
    """The routing choices for one generation: request > account > settings."""

    policy: str | None = None
    refusal: str = "explicit"
    fallback_image: bool = False
    max_cost: Decimal | None = None
    #: candidates running at once at most
    parallel: int = 1
    hedge: bool = False
    #: fixed hedging delay; None uses the running provider's observed latency
    hedge_delay_s: float | None = None

    def continue_after_refusal(self, request: GenerationRequest) -> bool:
        """Whether a refusal sends the request on to the next candidate."""
        if self.refusal == "always":
            return True
        return self.refusal == "explicit" and len(request.candidate_names()) > 1


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def resolve_options(
    request: GenerationRequest, account: AccountRouting, routing: RoutingSettings
) -> RouteOptions:
    """The request's own choices first, then the account's, then the settings."""
    refusal: str = routing.fallback_on_refusal
    if request.fallback_on_refusal is not None:
        refusal = "always" if request.fallback_on_refusal else "never"
    elif account.fallback_on_refusal is not None:
        refusal = account.fallback_on_refusal
    hedge = bool(
        _first(
            request.hedge,
            True if request.hedge_delay_s is not None else None,
            account.hedge,
            routing.hedge.enabled,
        )
    )
    race = _first(request.race, account.race, routing.race)
    parallel = (race if race and race > 1 else routing.hedge.max_parallel) if hedge else race or 1
    wants_image = bool(_first(request.fallback_image, account.fallback_image, False))
    caps = [c for c in (request.max_cost_per_image, account.max_cost_per_image) if c is not None]
    return RouteOptions(
        policy=_first(request.routing_policy, account.policy, routing.policy),
        refusal=refusal,
        fallback_image=routing.fallback_image and wants_image,
        max_cost=min(caps) if caps else None,
        parallel=parallel,
        hedge=hedge,
        hedge_delay_s=_first(request.hedge_delay_s, routing.hedge.delay_s),
    )


def _needs(request: GenerationRequest) -> set[str]:
    needs: set[str] = set()
    if any(getattr(request, name, None) for name in _REFERENCE_FIELDS):
        needs.add("reference_image")
    if request.background == "transparent":
        needs.add("transparency")
    if any(getattr(request, name, None) for name in _EDIT_FIELDS):
        needs.add("edit")
    if any(getattr(request, name, None) for name in _MASK_FIELDS):
        needs.add("mask")
    return needs


def _model_info(provider: Provider, model: str) -> ModelInfo | None:
    """The model's info; adapters that accept any model name (Replicate, fal) answer too."""
    try:
        return provider.model_info(model)
    except ProviderError:
        return None


def supports(provider: Provider, model: str, request: GenerationRequest) -> str | None:
    """``None`` when the model can serve the request, else why not."""
    info = _model_info(provider, model)
    if info is None:
        return f"unknown model {model!r}"
    caps = info.capabilities
    width, height = request.dimensions()
    if request.n > caps.max_n:
        return f"n={request.n} above the model's maximum {caps.max_n}"
    if width > caps.max_width or height > caps.max_height:
        return f"{width}x{height} larger than {caps.max_width}x{caps.max_height}"
    needs = _needs(request)
    if "reference_image" in needs and not caps.reference_image:
        return "no reference image support"
    if "transparency" in needs and not caps.transparency:
        return "no transparency support"
    if "edit" in needs and not caps.edit:
        return "no edit support"
    if "mask" in needs and not caps.mask:
        return "no mask support"
    return _format_support(caps.output_formats, request.format)


def _format_support(formats: tuple[str, ...], wanted: str) -> str | None:
    """SVG only from vector models; raster from a vector-only model needs the rasteriser."""
    if wanted == "svg":
        return None if "svg" in formats else "no SVG output (not a vector model)"
    if formats == ("svg",) and not rasterizer_available():
        return f"vector-only model: {wanted} needs the SVG rasteriser (pixelgate[svg])"
    return None


def _default_price(request: GenerationRequest) -> PriceFn:
    width, height = request.dimensions()

    def price(provider: Provider, model: str) -> Decimal | None:
        return known_price(
            provider,
            ProviderRequest(
                prompt=request.prompt,
                model=model,
                n=request.n,
                width=width,
                height=height,
                aspect_ratio=request.aspect_ratio,
                format=request.format,
                quality=request.quality,
                style=request.style,
                options=dict(request.options),
            ),
        )

    return price


def known_price(provider: Provider, request: ProviderRequest) -> Decimal | None:
    """The provider's USD estimate, or None when it has no price for this model."""
    try:
        return provider.price(request)
    except PriceUnknown as exc:
        _log_unknown(provider, request.model, exc)
        return None


def _log_unknown(provider: Provider, model: str | None, exc: PriceUnknown) -> None:
    log.info("price_unknown", provider=provider.name, model=model, reason=str(exc))


def plan_route(
    request: GenerationRequest,
    providers: ProviderSet,
    *,
    preferred: Sequence[str] | None = None,
    policy: str | None = None,
    chain: Sequence[str] | None = None,
    pool: Sequence[str] | None = None,
    priority: Callable[[str], int] | None = None,
    enabled: Callable[[str], bool] | None = None,
    quality: Callable[[Provider], float | None] | None = None,
    latency_ms: Callable[[str], float | None] | None = None,
    unavailable: dict[str, str] | None = None,
    deferred: dict[str, str] | None = None,
    max_cost: Decimal | None = None,
    require_price: bool = False,
    price: PriceFn | None = None,
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Candidates in order plus the decision trace (every provider considered, and why).

    Args:
        preferred: the account's preferred providers.
        policy: ``cost``, ``quality`` or ``latency``: rank the automatic pool by it.
        chain: the fallback chain (default: the providers' configured chain).
        pool: what the policy picks from (default: the chain and every configured
            provider that is not a placeholder).
        priority: lower goes first within the automatic step.
        enabled: False skips the provider (hot configuration).
        unavailable: provider → why it cannot be used now (an open breaker).
        deferred: provider → why it goes last (it asked us to back off).
        max_cost: skip providers above this USD per image.
        require_price: skip providers without a price for the model (a daily budget
            needs one; ``max_cost`` does too). An unknown price is never counted as free.
        price: USD estimate of the request on ``(provider, model)``; None: unknown.
    """
    price = price or _default_price(request)
    chain = list(chain if chain is not None else providers.default_chain)
    steps: list[tuple[str, str]] = []
    explicit = request.candidate_names()
    if explicit:
        steps = [(name, "requested") for name in explicit]
    else:
        steps += [(name, "preferred") for name in preferred or ()]
        if policy:
            names = list(pool) if pool is not None else _auto_pool(providers, chain)
            ranked = _rank(names, providers, request, policy, priority, quality, latency_ms, price)
            steps += [(name, f"policy:{policy}") for name in ranked]
        steps += [(name, "fallback_chain") for name in chain]

    trace: list[dict[str, Any]] = []
    candidates: list[Candidate] = []
    late: list[Candidate] = []
    seen: set[str] = set()
    for name, reason in steps:
        if name in seen:
            continue
        seen.add(name)
        entry: dict[str, Any] = {"provider": name, "step": reason}
        trace.append(entry)
        provider = providers.find(name)
        if provider is None:
            entry.update(decision="skipped", reason="unknown provider")
            continue
        model = request.model if (request.model and explicit) else provider.default_model
        entry["model"] = model
        why_not: str | None = None
        if not provider.configured:
            why_not = "not configured"
        elif enabled is not None and not enabled(name):
            why_not = "disabled by configuration"
        else:
            why_not = supports(provider, model, request)
        estimate = None if why_not else price(provider, model)
        if estimate is not None:
            entry["estimate_usd"] = format_usd(estimate)
        if why_not is None and unavailable and name in unavailable:
            why_not = unavailable[name]
        code: str | None = None
        if why_not is None and estimate is None and (require_price or max_cost is not None):
            why_not = f"no price for model {model!r}: a cost cap or a daily budget needs one"
            code = PRICE_UNKNOWN
        if why_not is None and max_cost is not None and estimate is not None:
            per_image = estimate / request.n
            if per_image > max_cost:
                why_not = f"${format_usd(per_image)} per image above max_cost_per_image ${max_cost}"
                code = OVER_COST_CAP
        if why_not:
            entry.update(decision="skipped", reason=why_not)
            if code:
                entry["code"] = code
            continue
        entry.update(decision="candidate", reason=reason)
        candidate = Candidate(provider, model, reason, estimate, entry)
        if deferred and name in deferred:
            entry["deferred"] = deferred[name]
            late.append(candidate)
        else:
            candidates.append(candidate)
    return candidates + late, trace


def _auto_pool(providers: ProviderSet, chain: Sequence[str]) -> list[str]:
    names = list(chain)
    for provider in providers.configured():
        if provider.name not in names and provider.kind != PLACEHOLDER:
            names.append(provider.name)
    return names


def _rank(
    names: list[str],
    providers: ProviderSet,
    request: GenerationRequest,
    policy: str,
    priority: Callable[[str], int] | None,
    quality: Callable[[Provider], float | None] | None,
    latency_ms: Callable[[str], float | None] | None,
    price: PriceFn,
) -> list[str]:
    """``names`` ordered by priority, then the policy's score (stable for ties)."""

    def score(name: str) -> tuple[float, float, float]:
        provider = providers.find(name)
        prio = float(priority(name)) if priority else 0.0
        if provider is None or not provider.configured:
            return (prio, float("inf"), 0.0)
        usd = price(provider, provider.default_model)
        cost = float(usd) if usd is not None else float("inf")
        if policy == "cost":
            return (prio, cost, 0.0)
        if policy == "quality":
            q = quality(provider) if quality else None
            if q is None:
                q = DEFAULT_QUALITY.get(provider.kind, UNKNOWN_QUALITY)
            return (prio, -q, -cost if usd is not None else 0.0)
        observed = latency_ms(name) if latency_ms else None
        return (prio, observed if observed is not None else UNKNOWN_LATENCY_MS, cost)

    return sorted(names, key=score)


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
        if request.provider:
            info = _model_info(provider, request.model or provider.default_model)
            fmt_reason = info and _format_support(info.capabilities.output_formats, request.format)
            if fmt_reason:
                raise ValidationFailed("format", fmt_reason, code="unsupported_format")
        if request.model and request.provider:
            if _model_info(provider, request.model) is None:
                raise ValidationFailed(
                    "model", f"{name!r} has no model {request.model!r}", code="unknown_model"
                )
            why_not = supports(provider, request.model, request)
            if why_not:
                raise ValidationFailed(field_name, why_not, code="unsupported")
