"""The sections of the settings (``[routing]``, ``[tiers.*]``, ``[credits]``…) as their own
models; :mod:`pixelgate.config` assembles them into ``Settings`` and re-exports them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode


def _split_hosts(value: Any) -> Any:
    """``"a.example, b.example"`` (environment) or a list (TOML)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


#: a host allow-list; the environment form is comma-separated
HostList = Annotated[list[str], NoDecode, BeforeValidator(_split_hosts)]

RoutingPolicy = Literal["cost", "quality", "latency"]
RefusalFallback = Literal["never", "explicit", "always"]


class RetrySettings(BaseModel):
    """Retries of one provider: exponential backoff with jitter (seed 004: 1 s, 2 s, 4 s)."""

    model_config = ConfigDict(extra="forbid")

    #: attempts per provider, the first included (1 = no retry)
    attempts: int = Field(3, ge=1, le=10)
    base_delay_s: float = Field(1.0, ge=0)
    max_delay_s: float = Field(30.0, ge=0)
    #: ± this fraction of the backoff, at random
    jitter: float = Field(0.1, ge=0, le=1)
    #: a provider's Retry-After longer than this moves on to the next candidate instead
    max_retry_after_s: float = Field(120.0, ge=0)


class BreakerSettings(BaseModel):
    """Circuit breaker per provider instance; only transient errors, timeouts and 5xx count."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: failures within ``window_s`` that open the breaker
    failure_threshold: int = Field(5, ge=1)
    #: also open when this share of calls in the window failed (with ``min_calls`` calls)
    failure_ratio: float | None = Field(None, gt=0, le=1)
    min_calls: int = Field(10, ge=1)
    window_s: float = Field(60.0, gt=0)
    #: open → half-open after this long, ± ``cooldown_jitter`` of it
    cooldown_s: float = Field(30.0, ge=0)
    cooldown_jitter: float = Field(0.1, ge=0, le=1)
    #: calls admitted while half-open; all must succeed to close again
    half_open_probes: int = Field(1, ge=1)


class HedgeSettings(BaseModel):
    """Hedged requests: start the next candidate when the running one is slow."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    #: fixed delay; None uses the running provider's observed latency at ``percentile``
    delay_s: float | None = Field(None, ge=0)
    percentile: float = Field(0.9, gt=0, le=1)
    #: delay while a provider has too few observations
    default_delay_s: float = Field(5.0, ge=0)
    min_delay_s: float = Field(0.25, ge=0)
    max_delay_s: float = Field(60.0, ge=0)
    #: candidates running at once at most
    max_parallel: int = Field(2, ge=2, le=8)


def _check_rate(value: str | None) -> str | None:
    if value is None:
        return None
    from limits import parse

    try:
        parse(value)
    except ValueError:
        raise ValueError("a rate like '60/minute' or '5 per second'") from None
    return value


class OutboundLimit(BaseModel):
    """Outbound limits of one provider (all accounts) and of each account on it (seed 000).

    A job over a limit waits for its turn (its events say why); it never fails for it.
    """

    model_config = ConfigDict(extra="forbid")

    #: requests per minute (moving window)
    rpm: int | None = Field(None, ge=1)
    #: any rate in the `limits` notation, e.g. "5/second", "1000/day"
    rate: str | None = None
    #: requests in flight at once
    concurrency: int | None = Field(None, ge=1)
    #: the same, per account on this provider
    account_rpm: int | None = Field(None, ge=1)
    account_rate: str | None = None
    account_concurrency: int | None = Field(None, ge=1)

    @field_validator("rate", "account_rate")
    @classmethod
    def _check_rates(cls, value: str | None) -> str | None:
        return _check_rate(value)


class ProviderRouting(BaseModel):
    """Routing overrides of one provider instance (seed 001's enabled / timeout / priority)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    timeout_s: float | None = Field(None, gt=0)
    #: lower goes first; orders the fallback chain and the automatic choice (default 100)
    priority: int | None = None
    #: 0-100, for the ``quality`` policy (default: a built-in table by provider kind)
    quality: float | None = Field(None, ge=0, le=100)
    #: attempts on this provider (overrides ``retry.attempts``)
    attempts: int | None = Field(None, ge=1, le=10)


class AlertSettings(BaseModel):
    """Alert rules (seed 001) and where alerts go; hot-reloadable as ``routing.alerts``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: a provider whose share of successful generations falls below this fraction
    provider_success_rate_below: float = Field(0.5, ge=0, le=1)
    provider_window_s: float = Field(600.0, gt=0)
    #: the share of failed generations over all providers
    error_rate_above: float = Field(0.05, ge=0, le=1)
    error_window_s: float = Field(300.0, gt=0)
    #: average provider latency of successful generations, seconds
    latency_above_s: float = Field(10.0, gt=0)
    latency_window_s: float = Field(300.0, gt=0)
    #: fewer finished generations in a window than this: no verdict (one failure is no outage)
    min_samples: int = Field(10, ge=1)
    #: a condition must hold this long before the alert is raised (no flapping)
    raise_after_s: float = Field(60.0, ge=0)
    #: and be clear this long before it is resolved
    resolve_after_s: float = Field(300.0, ge=0)
    #: how often the rules are evaluated
    interval_s: float = Field(30.0, gt=0)
    #: signed like generation webhooks (the admin account's secret)
    webhook_url: str | None = None
    #: e-mail recipients (needs ``smtp_host``)
    email: list[str] = Field(default_factory=list)


class RoutingSettings(BaseModel):
    """Provider selection, fallback, retries, breakers, racing and outbound limits.

    Everything here can also be changed at run time through ``PUT /admin/config``.
    """

    model_config = ConfigDict(extra="forbid")

    #: fallback chain of provider instance names, tried in order
    default: list[str] = Field(default_factory=list)
    #: answer with the placeholder image (provider "default") when every candidate fails
    #: (the seed 001 route always; the native API when the request or account asks)
    fallback_image: bool = True
    #: automatic choice before the chain: None keeps the chain's order
    policy: RoutingPolicy | None = None
    #: providers the automatic choice picks from (None: the chain and every configured
    #: provider that is not a placeholder)
    pool: list[str] | None = None
    #: after a refusal (safety/policy) try other providers: never, only among the
    #: providers the request listed itself, or always
    fallback_on_refusal: RefusalFallback = "explicit"
    #: overall time budget of one generation, waits included
    deadline_s: float = Field(300.0, gt=0)
    #: candidates started at once by default (a request's ``race`` wins)
    race: int | None = Field(None, ge=1, le=8)
    hedge: HedgeSettings = Field(default_factory=HedgeSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    #: by provider instance name; "*" applies to every provider without its own entry
    outbound: dict[str, OutboundLimit] = Field(default_factory=dict)
    providers: dict[str, ProviderRouting] = Field(default_factory=dict)
    #: alert thresholds and destinations (here so ``PUT /admin/config`` reloads them)
    alerts: AlertSettings = Field(default_factory=AlertSettings)


class TierSettings(BaseModel):
    """A tier's quotas: generations per window, and API requests per minute."""

    model_config = ConfigDict(extra="forbid")

    #: generations admitted per ``window_s`` (None: unlimited)
    daily_limit: int | None = Field(None, ge=0)
    window_s: int = Field(86_400, ge=1)
    #: "fixed": windows aligned to the Unix epoch, so a day's limit resets at UTC midnight
    #: (seed 004's ``resetTime``); "sliding": the last ``window_s`` seconds
    window: Literal["fixed", "sliding"] = "fixed"
    #: API requests per minute per account (None: unlimited)
    requests_per_minute: int | None = Field(None, ge=1)


def default_tiers() -> dict[str, TierSettings]:
    # seed 004: FREE 1, PRO 100, ENTERPRISE 1000 per 86 400 s; INTERNAL is the admin's own
    return {
        "FREE": TierSettings(daily_limit=1),
        "PRO": TierSettings(daily_limit=100),
        "ENTERPRISE": TierSettings(daily_limit=1000),
        "INTERNAL": TierSettings(daily_limit=None),
    }


class CreditSettings(BaseModel):
    """Credit rules (seed 004 by default) and the price of a dedup-cache hit."""

    model_config = ConfigDict(extra="forbid")

    base: int = Field(1, ge=0)
    high_res: int = Field(1, ge=0)
    per_extra_variation: int = Field(1, ge=0)
    reference_image: int = Field(1, ge=0)
    high_res_threshold: int = Field(1024, ge=1)
    cache_price: int = Field(0, ge=0)
    #: "refund" on final failure (seed 003) or "keep" (seed 004); accounts may override
    default_policy: Literal["refund", "keep"] = "refund"


class S3Settings(BaseModel):
    """Endpoint and credentials of an S3-compatible store (AWS S3, Cloudflare R2, MinIO).

    Unset fields are filled from the usual AWS variables by :func:`load_settings`.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
