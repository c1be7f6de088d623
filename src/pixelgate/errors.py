"""pixelgate's exception tree.

Every error carries a stable machine ``code`` (used in API error bodies) and a
human message. HTTP status mapping lives in ``pixelgate.api.errors``, not here.

    PixelgateError
    ├── ConfigError                 bad configuration file or value
    ├── ValidationFailed            a request field is invalid (names the field)
    ├── AuthenticationFailed        missing or unknown API key
    ├── Forbidden                   the key may not do this (admin only)
    ├── NotFound                    unknown (or another account's) resource
    ├── Conflict                    the resource is in a state that forbids the action
    ├── InsufficientCredits         the balance does not cover the price
    ├── BudgetExceeded              the account's daily USD budget would be passed
    ├── RateLimited                 a limit of ours was hit (retry_after seconds)
    ├── StorageError                the image store failed
    ├── DependencyDown              the database, Redis or the store cannot be used (says why)
    ├── UnsafeURL                   a user URL points at a non-public address
    ├── ImageRejected               bytes are not an acceptable image (bomb, size, format)
    └── ProviderError               an image provider failed; the router decides what to do
        ├── Transient               5xx, connection reset, malformed body: retry
        ├── ProviderRateLimited     provider said 429 (retry_after seconds): retry later
        ├── Refused                 safety / policy refusal: fail fast with the reason
        ├── InvalidRequest          the provider rejected the parameters: fail fast
        ├── ProviderAuthError       the provider rejected our credentials
        └── ProviderTimeout         no answer within the deadline: retry
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationFailed",
    "BudgetExceeded",
    "ConfigError",
    "Conflict",
    "DependencyDown",
    "Forbidden",
    "ImageRejected",
    "InsufficientCredits",
    "InvalidRequest",
    "NotFound",
    "PixelgateError",
    "ProviderAuthError",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderTimeout",
    "RateLimited",
    "Refused",
    "StorageError",
    "Transient",
    "UnsafeURL",
    "ValidationFailed",
]


class PixelgateError(Exception):
    """Root of every error pixelgate raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(PixelgateError):
    code = "config_error"


class ValidationFailed(PixelgateError):
    """A request field is invalid; ``field`` names it (dotted path)."""

    code = "invalid_request"

    def __init__(self, field: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{field}: {message}", code=code)
        self.field = field


class AuthenticationFailed(PixelgateError):
    code = "unauthorized"


class Forbidden(PixelgateError):
    code = "forbidden"


class NotFound(PixelgateError):
    code = "not_found"


class Conflict(PixelgateError):
    code = "conflict"


class InsufficientCredits(PixelgateError):
    code = "insufficient_credits"

    def __init__(self, message: str, *, balance: int, price: int) -> None:
        super().__init__(message)
        self.balance = balance
        self.price = price


class BudgetExceeded(PixelgateError):
    code = "budget_exceeded"

    def __init__(
        self, message: str, *, budget: Any, spent: Any, estimate: Any, resets_at: Any
    ) -> None:
        super().__init__(message)
        self.budget = budget
        self.spent = spent
        self.estimate = estimate
        self.resets_at = resets_at


class RateLimited(PixelgateError):
    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        limit: int | None = None,
        remaining: int = 0,
        reset_at: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining
        self.reset_at = reset_at


class StorageError(PixelgateError):
    code = "storage_error"


class DependencyDown(PixelgateError):
    """A service pixelgate needs (PostgreSQL, Redis, the S3 store) cannot be used; the
    message says why in one line and names the setting."""

    code = "dependency_down"


class UnsafeURL(PixelgateError):
    """A user URL that may not be fetched; ``field`` names the request field when known."""

    code = "unsafe_url"

    def __init__(
        self, message: str, *, code: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.field = field


class ImageRejected(PixelgateError):
    code = "image_rejected"


class ProviderError(PixelgateError):
    """A provider call failed. ``retryable`` tells the router whether to try again."""

    code = "provider_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.provider = provider
        self.retry_after = retry_after
        self.status_code = status_code


class Transient(ProviderError):
    code = "provider_unavailable"
    retryable = True


class ProviderRateLimited(ProviderError):
    code = "provider_rate_limited"
    retryable = True


class Refused(ProviderError):
    code = "content_refused"


class InvalidRequest(ProviderError):
    code = "provider_invalid_request"


class ProviderAuthError(ProviderError):
    code = "provider_auth_failed"


class ProviderTimeout(ProviderError):
    code = "provider_timeout"
    retryable = True


class PriceUnknown(LookupError):
    """A provider has no price for a model (``Provider.price``): its cost is unknown.

    Routing treats the estimate as unknown, never as free: a cost cap or a daily budget
    skips such a provider. Any other error from ``price`` is a defect and propagates.
    """
