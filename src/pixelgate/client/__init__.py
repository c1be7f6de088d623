"""A typed Python client for a pixelgate server (sync and asyncio, on httpx).

    from pixelgate.client import Client

    with Client("http://127.0.0.1:8080", api_key="pg_...") as pg:
        generation = pg.generate("a lighthouse at dusk", aspect_ratio="16:9")
        pg.download(generation.images[0], "lighthouse.png")

Importing it loads only httpx, pydantic and the shared request model: none of the server.
"""

from pixelgate.client._async import AsyncAdmin, AsyncClient, AsyncGenerationHandle
from pixelgate.client._base import RetryPolicy
from pixelgate.client._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientError,
    ConflictError,
    ConnectionFailed,
    DownloadFailed,
    GenerationFailed,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    WaitTimeout,
)
from pixelgate.client._models import (
    Account,
    AccountSummary,
    ApiKey,
    Batch,
    Cost,
    ErrorInfo,
    Estimate,
    Event,
    Generation,
    GenerationPage,
    Image,
    ModelInfo,
    ProviderHealth,
    ProviderInfo,
    Status,
    Timings,
)
from pixelgate.client._sync import Admin, Client, GenerationHandle
from pixelgate.core.models import GenerationRequest

__all__ = [
    "APIError",
    "Account",
    "AccountSummary",
    "Admin",
    "ApiKey",
    "AsyncAdmin",
    "AsyncClient",
    "AsyncGenerationHandle",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "Client",
    "ClientError",
    "ConflictError",
    "ConnectionFailed",
    "Cost",
    "DownloadFailed",
    "ErrorInfo",
    "Estimate",
    "Event",
    "Generation",
    "GenerationFailed",
    "GenerationHandle",
    "GenerationPage",
    "GenerationRequest",
    "Image",
    "ModelInfo",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "ProviderHealth",
    "ProviderInfo",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "Status",
    "Timings",
    "WaitTimeout",
]
