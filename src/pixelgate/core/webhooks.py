"""Signed webhooks when a generation ends: succeeded, failed or canceled.

The URL is the request's ``webhook_url``, else the account's. Each delivery is one
row in ``webhook_deliveries`` (at most one per generation and event), updated after
every attempt. Delivery goes through :class:`~pixelgate.media.fetch.SafeFetcher`:
public addresses only unless ``webhook_allow_hosts`` names the host, and redirects
are never followed. Failures are retried with exponential backoff (bounded by
``webhook_max_attempts``) in the finish-hook task, never in the worker's.

Signature (``docs/webhooks.md``)::

    Pixelgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

The secret is per account, derived from the deployment secret (``webhook_secret``,
or one generated once into ``<data dir>/webhook_secret``), so one tenant cannot
forge another's webhooks; ``GET /v1/webhooks/secret`` shows an account its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from pixelgate.config import Settings
from pixelgate.core.finish_hooks import Finished
from pixelgate.core.models import GenerationView, Status
from pixelgate.core.ports import DeliveryRecords
from pixelgate.errors import UnsafeURL, ValidationFailed
from pixelgate.media.fetch import FetchFailed, SafeFetcher
from pixelgate.observability import metrics

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "WebhookNotifier",
    "account_secret",
    "deployment_secret",
    "sign",
    "verify",
]

log = structlog.get_logger("pixelgate.webhooks")

SIGNATURE_HEADER = "Pixelgate-Signature"
EVENT_HEADER = "Pixelgate-Event"
DELIVERY_HEADER = "Pixelgate-Delivery"
USER_AGENT = "pixelgate-webhooks/1"
SECRET_FILE = "webhook_secret"
SECRET_PREFIX = "whsec_"
#: how old a signature a receiver should accept (documented for receivers)
DEFAULT_TOLERANCE_S = 300
#: statuses worth another attempt; any other non-2xx is the receiver's final answer
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: how long checking a webhook URL may wait for DNS
URL_CHECK_TIMEOUT_S = 5.0


async def check_webhook_url(
    fetcher: SafeFetcher, url: str, *, allow_hosts: Iterable[str], field: str
) -> None:
    """The one check of an account's webhook URL, whoever sets it (API, admin API, CLI).

    Raises:
        ValidationFailed: ``unsafe_url`` naming ``field``: bad syntax, a non-public
            address, or a host that does not resolve (in time).
    """
    try:
        async with asyncio.timeout(URL_CHECK_TIMEOUT_S):
            await fetcher.check(url, allow_hosts=allow_hosts, what=field)
    except UnsafeURL as exc:
        raise ValidationFailed(
            field, exc.message.removeprefix(f"{field}: "), code="unsafe_url"
        ) from None
    except TimeoutError:
        raise ValidationFailed(field, "the host does not resolve", code="unsafe_url") from None


MAX_ERROR_LENGTH = 500
EVENTS: dict[Status, str] = {
    Status.SUCCEEDED: "generation.succeeded",
    Status.FAILED: "generation.failed",
    Status.CANCELED: "generation.canceled",
}

_secret_lock = threading.Lock()
_secret_cache: dict[str, bytes] = {}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Pixelgate-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Check a ``Pixelgate-Signature`` header the way a receiver should."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))


def deployment_secret(settings: Settings) -> bytes:
    """``webhook_secret``, else the one stored in the data dir (created on first use)."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value().encode()
    path = (settings.data_dir / SECRET_FILE).resolve()
    with _secret_lock:
        cached = _secret_cache.get(str(path))
        if cached is None:
            cached = _read_or_create_secret(path)
            _secret_cache[str(path)] = cached
        return cached


def account_secret(settings: Settings, account_id: str) -> str:
    """The signing secret of one account: HMAC of its id under the deployment secret."""
    digest = hmac.new(deployment_secret(settings), f"webhook:{account_id}".encode(), "sha256")
    return SECRET_PREFIX + digest.hexdigest()


class WebhookNotifier:
    """The finish hook that delivers webhooks (``Pipeline.finish_hooks``)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: DeliveryRecords,
        fetcher: SafeFetcher,
        render: Callable[[GenerationView], dict[str, Any]],
    ) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.render = render

    async def __call__(self, finished: Finished) -> None:
        event = EVENTS.get(Status(await finished.status()))
        if event is None:
            return
        url = (await finished.request()).get("webhook_url")
        if not url:
            url = (await self.store.get_account_cached(await finished.account_id())).webhook_url
        if not url:
            return
        view = await finished.view()
        body = json.dumps(
            {
                "type": event,
                "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "generation": self.render(view),
            },
            separators=(",", ":"),
            default=str,
        )
        delivery_id = await self.store.create_webhook_delivery(
            generation_id=view.id,
            account_id=view.account_id,
            event=event,
            url=url,
            payload=body,
        )
        if delivery_id is None:
            return  # another process already delivers this event
        await self.deliver(delivery_id, view.account_id, event, url, body.encode())

    async def deliver(
        self, delivery_id: str, account_id: str, event: str, url: str, body: bytes
    ) -> bool:
        """Send with retries; records every attempt. True once a 2xx came back."""
        secret = account_secret(self.settings, account_id)
        s = self.settings
        retrying = AsyncRetrying(
            stop=stop_after_attempt(s.webhook_max_attempts),
            wait=wait_exponential(multiplier=s.webhook_backoff_s, max=s.webhook_backoff_max_s),
            retry=retry_if_exception_type(_RetryableFailure),
            reraise=True,
        )
        state = _Attempt(delivery_id=delivery_id, event=event, url=url, body=body)
        try:
            async for attempt in retrying:
                with attempt:
                    state.number = attempt.retry_state.attempt_number
                    await self._attempt(state, secret)
        except (_RetryableFailure, _FinalFailure):
            metrics.webhook_delivered(False)
            await self.store.record_webhook_attempt(
                delivery_id,
                status="failed",
                attempts=state.number,
                response_status=state.status,
                error=state.error,
            )
            log.warning(
                "webhook_failed",
                delivery_id=delivery_id,
                attempts=state.number,
                status=state.status,
                error=state.error,
            )
            return False
        metrics.webhook_delivered(True)
        return True

    async def _attempt(self, state: _Attempt, secret: str) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: state.event,
            DELIVERY_HEADER: state.delivery_id,
            SIGNATURE_HEADER: sign(secret, int(time.time()), state.body),
        }
        state.status = None
        try:
            result = await self.fetcher.send(
                "POST",
                state.url,
                content=state.body,
                headers=headers,
                timeout_s=self.settings.webhook_timeout_s,
                allow_hosts=self.settings.webhook_allow_hosts,
                what="webhook_url",
            )
        except UnsafeURL as exc:
            state.error = exc.message[:MAX_ERROR_LENGTH]
            raise _FinalFailure from None
        except FetchFailed as exc:
            error, retry = exc.message, True
        else:
            state.status = result.status_code
            if 200 <= result.status_code < 300:
                await self.store.record_webhook_attempt(
                    state.delivery_id,
                    status="delivered",
                    attempts=state.number,
                    response_status=state.status,
                    error=None,
                )
                return
            if 300 <= result.status_code < 400:
                error = f"HTTP {result.status_code}: redirects are not followed for webhooks"
                retry = False
            else:
                error = f"HTTP {result.status_code}"
                retry = result.status_code in RETRY_STATUSES
        state.error = error[:MAX_ERROR_LENGTH]
        if not retry:
            raise _FinalFailure
        await self.store.record_webhook_attempt(
            state.delivery_id,
            status="pending",
            attempts=state.number,
            response_status=state.status,
            error=state.error,
        )
        raise _RetryableFailure


@dataclass
class _Attempt:
    """One delivery's progress through its attempts."""

    delivery_id: str
    event: str
    url: str
    body: bytes
    number: int = 0
    status: int | None = None
    error: str | None = None


class _RetryableFailure(Exception):
    pass


class _FinalFailure(Exception):
    pass


def _read_or_create_secret(path: Path) -> bytes:
    try:
        return path.read_text().strip().encode()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".webhook-secret-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # atomic create-if-absent: a racing process keeps its own
        except FileExistsError:
            return path.read_text().strip().encode()
    finally:
        os.unlink(tmp)
    return value.encode()
