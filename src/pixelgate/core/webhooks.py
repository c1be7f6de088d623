"""Signed webhooks when a generation ends: succeeded, failed or canceled.

The URL is the request's ``webhook_url``, else the account's. Each delivery is one
row in ``webhook_deliveries`` (at most one per generation and event), updated after
every attempt. This module decides what is delivered and when, and holds the signing
contract; a :class:`WebhookSender` sends (over HTTP:
:class:`pixelgate.delivery.webhooks.HttpWebhookSender`, retried with backoff in the
finish-hook task, never in the worker's).

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pixelgate.config import Settings
from pixelgate.core.finish_hooks import Finished
from pixelgate.core.models import GenerationView, Status
from pixelgate.core.ports import DeliveryRecords
from pixelgate.errors import UnsafeURL, ValidationFailed
from pixelgate.media.fetch import SafeFetcher

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "WebhookNotifier",
    "WebhookSender",
    "account_secret",
    "deployment_secret",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "Pixelgate-Signature"
EVENT_HEADER = "Pixelgate-Event"
DELIVERY_HEADER = "Pixelgate-Delivery"
USER_AGENT = "pixelgate-webhooks/1"
SECRET_FILE = "webhook_secret"
SECRET_PREFIX = "whsec_"
#: how old a signature a receiver should accept (documented for receivers)
DEFAULT_TOLERANCE_S = 300
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


class WebhookSender(Protocol):
    """Sends one delivery (signed with the account's secret), recording every attempt."""

    async def deliver(
        self, delivery_id: str, account_id: str, event: str, url: str, body: bytes
    ) -> bool:
        """True once the receiver answered 2xx."""
        ...


class WebhookNotifier:
    """The finish hook that delivers webhooks (``Pipeline.finish_hooks``)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: DeliveryRecords,
        sender: WebhookSender,
        render: Callable[[GenerationView], dict[str, Any]],
    ) -> None:
        self.settings = settings
        self.store = store
        self.sender = sender
        self.render = render

    def skips(self, finished: Finished) -> bool:
        """Nothing to deliver, known without a read: a status with no webhook event, or
        no URL on the request nor (cached) on the account."""
        status = finished.known_status
        if status is not None and EVENTS.get(Status(status)) is None:
            return True
        request, account_id = finished.known_request, finished.known_account_id
        if request is None or account_id is None or request.get("webhook_url"):
            return False
        account = self.store.peek_account_cached(account_id)
        return account is not None and not account.webhook_url

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
        await self.sender.deliver(delivery_id, view.account_id, event, url, body.encode())


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
