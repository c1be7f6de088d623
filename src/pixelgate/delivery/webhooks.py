"""Webhook delivery over HTTP: signed POSTs, retried with exponential backoff.

Delivery goes through :class:`~pixelgate.media.fetch.SafeFetcher`: public addresses only
unless ``webhook_allow_hosts`` names the host, and redirects are never followed.
Failures are retried (bounded by ``webhook_max_attempts``); every attempt is recorded in
the delivery log. What to deliver and when, and the signature, are
:mod:`pixelgate.core.webhooks`'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from pixelgate.config import Settings
from pixelgate.core.ports import DeliveryLog
from pixelgate.core.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    USER_AGENT,
    account_secret,
    sign,
)
from pixelgate.errors import UnsafeURL
from pixelgate.media.fetch import FetchFailed, SafeFetcher
from pixelgate.observability import metrics

__all__ = ["RETRY_STATUSES", "HttpWebhookSender"]

log = structlog.get_logger("pixelgate.webhooks")

#: statuses worth another attempt; any other non-2xx is the receiver's final answer
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_ERROR_LENGTH = 500


class HttpWebhookSender:
    """The :class:`~pixelgate.core.webhooks.WebhookSender` over HTTP."""

    def __init__(self, *, settings: Settings, store: DeliveryLog, fetcher: SafeFetcher) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher

    async def deliver(
        self, delivery_id: str, account_id: str, event: str, url: str, body: bytes
    ) -> bool:
        """Send with retries; records every attempt. True once a 2xx came back."""
        # at the first delivery, not at start (~0.4 MB, ~6 ms): most processes send none
        from tenacity import (
            AsyncRetrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential,
        )

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
