"""The client's exception tree (``pixelgate.client`` re-exports every name).

    ClientError                   anything the client raises on purpose
    ├── ConnectionFailed          no answer: the server is down, a timeout, a reset
    ├── DownloadFailed            an image's bytes could not be fetched or did not match
    ├── WaitTimeout               not finished within the wait (``.result``, the last seen)
    └── APIError                  pixelgate answered with an error (``code``, ``message``,
        │                         ``field``, ``request_id``, ``status``, ``body``)
        ├── BadRequestError       400/422 (and invalid input caught before sending)
        ├── AuthenticationError   401
        ├── PaymentRequiredError  402: credits or the daily budget
        ├── PermissionDeniedError 403
        ├── NotFoundError         404
        ├── ConflictError         409
        ├── RateLimitError        429 (``retry_after``), after the retries
        ├── ServerError           5xx
        └── GenerationFailed      ``generate()`` ended FAILED or CANCELED (``.generation``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixelgate.client._models import Generation

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ClientError",
    "ConflictError",
    "ConnectionFailed",
    "DownloadFailed",
    "GenerationFailed",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "WaitTimeout",
    "error_for_status",
]


class ClientError(Exception):
    """Root of everything the pixelgate client raises on purpose."""


class ConnectionFailed(ClientError):
    """The request got no answer (connection refused or reset, a timeout)."""


class DownloadFailed(ClientError):
    """An image could not be downloaded, or its bytes did not match its ``sha256``."""


class WaitTimeout(ClientError):
    """A generation (or batch) did not finish in time; it carries on at the server.

    ``result`` is the generation or batch as last seen (``generation`` is the same object).
    """

    def __init__(self, result: Any, timeout: float) -> None:
        super().__init__(f"{result.id} still {result.status} after {timeout:g} s")
        self.result = result
        self.generation = result
        self.timeout = timeout


class APIError(ClientError):
    """pixelgate answered with an error body: its code, message, field and request id."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        field: str | None = None,
        request_id: str | None = None,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.field = field
        self.request_id = request_id
        self.body = body or {}
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" [{self.status}]" if self.status else ""
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.code}{where}: {self.message}{rid}"


class BadRequestError(APIError):
    """The request was invalid (400/422); ``field`` names the culprit."""


class AuthenticationError(APIError):
    """Missing, unknown or revoked API key (401)."""


class PaymentRequiredError(APIError):
    """Not enough credits, or the daily budget would be passed (402)."""


class PermissionDeniedError(APIError):
    """The key may not do this, e.g. an admin route with a user key (403)."""


class NotFoundError(APIError):
    """Unknown resource, or one of another account (404)."""


class ConflictError(APIError):
    """The resource's state forbids the action (409)."""


class RateLimitError(APIError):
    """A limit was hit (429) and the retries ran out; ``retry_after`` in seconds."""


class ServerError(APIError):
    """pixelgate or a provider failed (5xx)."""


class GenerationFailed(APIError):
    """``generate()`` finished FAILED or CANCELED; ``code`` is the generation's error code."""

    def __init__(self, generation: Generation) -> None:
        error = generation.error
        code = error.code if error else generation.status.lower()
        message = (error.message if error else None) or f"generation {generation.status}"
        super().__init__(
            f"generation {generation.id}: {message}",
            code=code,
            request_id=generation.request_id,
        )
        self.generation = generation


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
}


def error_for_status(status: int) -> type[APIError]:
    """The exception class of an HTTP error status."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIError)
