"""What the sync and async clients share: building calls, reading errors, retry delays, SSE."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from pixelgate import __version__
from pixelgate.client._errors import APIError, BadRequestError, DownloadFailed, error_for_status
from pixelgate.client._models import Event, Image
from pixelgate.core.models import GenerationRequest

__all__ = ["Call", "RetryPolicy", "build_request_body", "parse_error", "parse_event"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_TIMEOUT_S = 60.0
#: ``Prefer: wait`` asked of the server by ``generate()`` (the server caps it, 120 s by default)
DEFAULT_SERVER_WAIT_S = 60.0
DEFAULT_GENERATE_TIMEOUT_S = 300.0
#: the server pings an event stream every 15 s: a longer silence means a dead connection
SSE_READ_TIMEOUT_S = 45.0
POLL_START_S = 0.1
POLL_MAX_S = 1.0
RETRY_STATUSES = frozenset({429, 503})
USER_AGENT = f"pixelgate-client/{__version__}"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of 429 and 503 answers: ``Retry-After`` when given, else exponential backoff.

    A ``Retry-After`` longer than ``max_delay`` is not waited for: the error is raised at once.
    """

    max_retries: int = 2
    max_delay: float = 60.0
    backoff: float = 0.5

    def delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        after = retry_after(response.headers)
        if after is None:
            return min(self.max_delay, self.backoff * 2**attempt * (0.5 + random.random()))
        return after if after <= self.max_delay else None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or bad."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class Call(Generic[T]):
    """One API call: what to send, and how to read a successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        extra: dict[str, Any] = {}
        if self.timeout is not None:
            extra["timeout"] = self.timeout
        return client.build_request(
            self.method, self.path, json=self.json, params=params, headers=self.headers, **extra
        )


def model_of(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: cls.model_validate(response.json())


def list_of(cls: type[M], key: str = "data") -> Callable[[httpx.Response], list[M]]:
    return lambda response: [cls.model_validate(item) for item in response.json()[key]]


def build_request_body(
    prompt: str | None, request: GenerationRequest | None, fields: dict[str, Any]
) -> dict[str, Any]:
    """Validate a request with the server's own model; a bad field raises ``BadRequestError``.

    Only what the caller set is sent, so the server's defaults (and its configuration's) apply.
    """
    if request is not None:
        if prompt is not None or fields:
            raise TypeError("give a GenerationRequest or prompt and fields, not both")
        return request.model_dump(mode="json", exclude_unset=True, by_alias=False)
    if prompt is not None:
        fields = {"prompt": prompt, **fields}
    try:
        model = GenerationRequest.model_validate(fields)
    except ValidationError as exc:
        raise invalid_input(exc) from None
    return model.model_dump(mode="json", exclude_unset=True)


def invalid_input(exc: ValidationError) -> BadRequestError:
    first = exc.errors()[0]
    name = ".".join(str(p) for p in first.get("loc", ())) or "body"
    message = "field required" if first.get("type") == "missing" else str(first.get("msg"))
    return BadRequestError(f"{name}: {message}", code="invalid_request", field=name)


def new_idempotency_key() -> str:
    """A fresh key: a retried POST (after a 429/503 or a lost answer) is never admitted twice."""
    return f"pgc-{uuid.uuid4().hex}"


def parse_error(response: httpx.Response) -> APIError:
    """The exception for an error answer, from pixelgate's ``{"error": {...}}`` body."""
    status = response.status_code
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    code, message, field_name = "http_error", response.text[:500] or response.reason_phrase, None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
            field_name = error.get("field") or error.get("param")
            request_id = error.get("request_id") or request_id
        elif isinstance(error, str):  # the seed routes' flat shape
            code, message = str(body.get("code") or code), error
            request_id = body.get("request_id") or request_id
    cls = error_for_status(status)
    return cls(
        message,
        code=code,
        status=status,
        field=field_name,
        request_id=request_id,
        body=body if isinstance(body, dict) else None,
        retry_after=retry_after(response.headers),
    )


def parse_event(event_id: str, event: str, data: str, generation_id: str) -> Event:
    """One SSE message of ``/v1/generations/{id}/events`` as an :class:`Event`."""
    payload: dict[str, Any] = json.loads(data) if data else {}
    created = payload.pop("created_at", None)
    payload.pop("generation_id", None)
    kind = str(payload.pop("type", event or "message"))
    return Event(
        id=int(event_id) if event_id.isdigit() else None,
        type=kind,
        generation_id=generation_id,
        created_at=created,
        data=payload,
    )


def same_origin(url: str, base_url: httpx.URL) -> bool:
    """Whether ``url`` points at the pixelgate server itself (then it may see the API key)."""
    parts = urlsplit(url)
    if not parts.scheme:
        return True
    return (parts.scheme, parts.netloc) == (base_url.scheme, base_url.netloc.decode())


def absolute(url: str, base_url: httpx.URL) -> str:
    return urljoin(str(base_url), url)


def client_headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    merged = {"User-Agent": USER_AGENT, **(headers or {})}
    if api_key:
        merged["Authorization"] = f"Bearer {api_key}"
    return merged


def batch_member(request: GenerationRequest | Mapping[str, Any]) -> dict[str, Any]:
    """One request of a batch, validated like a single one."""
    if isinstance(request, GenerationRequest):
        return build_request_body(None, request, {})
    return build_request_body(None, None, dict(request))


def check_digest(image: Image | str, data: bytes) -> None:
    """Downloaded bytes must hash to the image's ``sha256`` (a truncated body does not)."""
    if isinstance(image, Image) and hashlib.sha256(data).hexdigest() != image.sha256:
        raise DownloadFailed(f"{image.url}: the bytes do not match sha256 {image.sha256}")
