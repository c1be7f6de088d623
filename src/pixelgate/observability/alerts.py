"""Alerts (seed 001): provider success rate, overall error rate, average latency.

The rules read finished generations from the database, the state every process shares,
over their windows (``routing.alerts``, hot-reloadable through ``PUT /admin/config``):

- ``provider_success_rate``: one provider's share of successful generations under
  ``provider_success_rate_below`` (50 %) over ``provider_window_s`` (10 minutes);
- ``error_rate``: the share of failed generations over ``error_rate_above`` (5 %);
- ``latency``: the average provider time of successful generations over
  ``latency_above_s`` (10 s).

A window with fewer than ``min_samples`` generations gives no verdict. A condition must
hold for ``raise_after_s`` before its alert is raised and be clear for
``resolve_after_s`` before it is resolved: raised once, resolved once, no flapping.
Each raise and resolve is logged, sent to ``webhook_url`` (signed like the generation
webhooks, with the admin account's secret) and e-mailed to ``email``.

Every process may evaluate: the alerts table allows one firing alert per rule and
subject (a unique key), so of N processes that see the same outage exactly one raises
(and delivers) it, and exactly one resolves it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

import structlog

from pixelgate.config import AlertSettings
from pixelgate.db.observability import NOT_PROVIDERS, AlertStore, WindowStats

if TYPE_CHECKING:
    from pixelgate.runtime import Runtime

__all__ = ["ALERT_EVENTS", "RULES", "AlertManager", "Condition"]

log = structlog.get_logger("pixelgate.alerts")

RULES = ("provider_success_rate", "error_rate", "latency")
ALL = "*"
ALERT_EVENTS = {"firing": "alert.raised", "resolved": "alert.resolved"}
HISTORY_LIMIT = 100


@dataclass(frozen=True)
class Condition:
    """What one rule found about one subject in its window."""

    rule: str
    subject: str
    breached: bool
    value: float
    threshold: float
    message: str


class AlertManager:
    """Evaluates the rules periodically, raises and resolves alerts, delivers them.

    ``clock`` (UTC datetimes) is injectable: tests move time instead of sleeping.
    """

    def __init__(self, runtime: Runtime, *, clock: Callable[[], datetime] | None = None) -> None:
        self.runtime = runtime
        self.store = AlertStore(runtime.db)
        self.clock = clock or (lambda: datetime.now(UTC))
        #: since when each (rule, subject) has been breached / clear, as seen here
        self._breached_since: dict[tuple[str, str], datetime] = {}
        self._clear_since: dict[tuple[str, str], datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    # The Python API (the web UI uses it) --------------------------------------------

    async def active(self) -> list[dict[str, Any]]:
        """Alerts firing now, newest first (plain dicts)."""
        return await self.store.alerts(active=True)

    async def history(self, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
        """Recent alerts, firing or resolved, newest first (plain dicts)."""
        return await self.store.alerts(active=False, limit=limit)

    # Evaluation ------------------------------------------------------------------

    async def settings(self) -> AlertSettings:
        return (await self.runtime.pipeline.control.current()).alerts

    async def conditions(self, cfg: AlertSettings) -> list[Condition]:
        """Every rule's verdict now (subjects without enough samples are left out)."""
        now = self.clock()
        found: list[Condition] = []
        per_provider = await self.store.window(now - timedelta(seconds=cfg.provider_window_s))
        for stats in per_provider:
            if stats.provider is None or stats.provider in NOT_PROVIDERS:
                continue
            if stats.total < cfg.min_samples:
                continue
            rate = stats.succeeded / stats.total
            found.append(
                Condition(
                    "provider_success_rate",
                    stats.provider,
                    rate < cfg.provider_success_rate_below,
                    round(rate, 4),
                    cfg.provider_success_rate_below,
                    f"{stats.provider}: success rate {rate:.0%} over "
                    f"{cfg.provider_window_s / 60:g} min ({stats.succeeded}/{stats.total}), "
                    f"under {cfg.provider_success_rate_below:.0%}",
                )
            )
        errors = _total(
            await self._window(now, cfg.error_window_s, cfg.provider_window_s, per_provider)
        )
        if errors.total >= cfg.min_samples:
            rate = errors.failed / errors.total
            found.append(
                Condition(
                    "error_rate",
                    ALL,
                    rate > cfg.error_rate_above,
                    round(rate, 4),
                    cfg.error_rate_above,
                    f"error rate {rate:.1%} over {cfg.error_window_s / 60:g} min "
                    f"({errors.failed}/{errors.total}), above {cfg.error_rate_above:.1%}",
                )
            )
        latency = _total(
            await self._window(now, cfg.latency_window_s, cfg.provider_window_s, per_provider)
        )
        if latency.succeeded >= cfg.min_samples and latency.avg_provider_ms is not None:
            seconds = latency.avg_provider_ms / 1000
            found.append(
                Condition(
                    "latency",
                    ALL,
                    seconds > cfg.latency_above_s,
                    round(seconds, 3),
                    cfg.latency_above_s,
                    f"average latency {seconds:.1f} s over {cfg.latency_window_s / 60:g} min "
                    f"({latency.succeeded} generations), above {cfg.latency_above_s:g} s",
                )
            )
        return found

    async def _window(
        self, now: datetime, seconds: float, read_s: float, read: list[WindowStats]
    ) -> list[WindowStats]:
        if seconds == read_s:
            return read
        return await self.store.window(now - timedelta(seconds=seconds))

    async def evaluate(self) -> list[dict[str, Any]]:
        """One round: raise and resolve what is due; the alerts changed (plain dicts)."""
        cfg = await self.settings()
        if not cfg.enabled:
            return []
        now = self.clock()
        changed: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for cond in await self.conditions(cfg):
            key = (cond.rule, cond.subject)
            seen.add(key)
            if cond.breached:
                self._clear_since.pop(key, None)
                since = self._breached_since.setdefault(key, now)
                if (now - since).total_seconds() >= cfg.raise_after_s:
                    alert = await self.store.raise_alert(
                        rule=cond.rule,
                        subject=cond.subject,
                        value=cond.value,
                        threshold=cond.threshold,
                        message=cond.message,
                        now=now,
                    )
                    if alert is not None:
                        changed.append(alert)
            else:
                self._breached_since.pop(key, None)
                changed.extend(await self._maybe_resolve(key, now, cfg))
        # a subject with no verdict (traffic stopped) counts as clear
        for alert in await self.store.alerts(active=True):
            key = (alert["rule"], alert["subject"])
            if key not in seen:
                self._breached_since.pop(key, None)
                changed.extend(await self._maybe_resolve(key, now, cfg))
        for alert in changed:
            self._announce(alert, cfg)
        return changed

    async def _maybe_resolve(
        self, key: tuple[str, str], now: datetime, cfg: AlertSettings
    ) -> list[dict[str, Any]]:
        since = self._clear_since.setdefault(key, now)
        if (now - since).total_seconds() < cfg.resolve_after_s:
            return []
        self._clear_since.pop(key, None)
        resolved = await self.store.resolve_alert(key[0], key[1], now)
        return [resolved] if resolved is not None else []

    # Running ---------------------------------------------------------------------

    def start(self) -> None:
        """Evaluate every ``interval_s`` in the background until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="pixelgate-alerts")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._deliveries:
            await asyncio.wait(list(self._deliveries), timeout=5.0)

    async def _loop(self) -> None:
        while True:
            interval = 30.0
            try:
                interval = (await self.settings()).interval_s
                await self.evaluate()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert_evaluation_failed")
            await asyncio.sleep(interval)

    # Delivery ----------------------------------------------------------------------

    def _announce(self, alert: dict[str, Any], cfg: AlertSettings) -> None:
        level = log.warning if alert["status"] == "firing" else log.info
        level(ALERT_EVENTS[alert["status"]].replace(".", "_"), **alert)
        if cfg.webhook_url or (cfg.email and self.runtime.settings.smtp_host):
            task = asyncio.create_task(self._deliver(alert, cfg))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, alert: dict[str, Any], cfg: AlertSettings) -> None:
        if cfg.webhook_url:
            try:
                await self._post(alert, cfg.webhook_url)
            except Exception:
                log.exception("alert_webhook_failed", alert_id=alert["id"])
        if cfg.email and self.runtime.settings.smtp_host:
            try:
                await self._mail(alert, cfg.email)
            except Exception:
                log.exception("alert_mail_failed", alert_id=alert["id"])

    async def _post(self, alert: dict[str, Any], url: str) -> None:
        from pixelgate.core.webhooks import (
            DELIVERY_HEADER,
            EVENT_HEADER,
            SIGNATURE_HEADER,
            USER_AGENT,
            account_secret,
            sign,
        )

        settings = self.runtime.settings
        event = ALERT_EVENTS[alert["status"]]
        body = json.dumps(
            {"type": event, "created_at": _iso(self.clock()), "alert": alert},
            separators=(",", ":"),
        ).encode()
        admin = await self.runtime.local_caller()  # the admin account signs alerts
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: event,
            DELIVERY_HEADER: f"{alert['id']}:{alert['status']}",
            SIGNATURE_HEADER: sign(
                account_secret(settings, admin.account_id), int(time.time()), body
            ),
        }
        for attempt in range(settings.webhook_max_attempts):
            result = await self.runtime.pipeline.fetcher.send(
                "POST",
                url,
                content=body,
                headers=headers,
                timeout_s=settings.webhook_timeout_s,
                allow_hosts=settings.webhook_allow_hosts,
                what="alerts.webhook_url",
            )
            if 200 <= result.status_code < 300:
                log.info("alert_webhook_delivered", alert_id=alert["id"], status=result.status_code)
                return
            log.warning("alert_webhook_refused", alert_id=alert["id"], status=result.status_code)
            await asyncio.sleep(
                min(settings.webhook_backoff_max_s, settings.webhook_backoff_s * 2**attempt)
            )

    async def _mail(self, alert: dict[str, Any], recipients: list[str]) -> None:
        from pixelgate.delivery.smtp import SmtpSender

        settings = self.runtime.settings
        message = alert_message(alert, sender=settings.smtp_from, recipients=recipients)
        await SmtpSender(settings).send(message)
        log.info("alert_mail_sent", alert_id=alert["id"], recipients=len(recipients))


def alert_message(alert: dict[str, Any], *, sender: str, recipients: list[str]) -> EmailMessage:
    """The e-mail about an alert raised or resolved."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    word = "ALERT" if alert["status"] == "firing" else "resolved"
    message["Subject"] = f"pixelgate {word}: {alert['message']}"
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    lines = [
        f"{word}: {alert['message']}",
        "",
        f"Rule:      {alert['rule']} ({alert['subject']})",
        f"Value:     {alert['value']:g} (threshold {alert['threshold']:g})",
        f"Raised:    {alert['raised_at']}",
        f"Resolved:  {alert['resolved_at'] or '-'}",
        f"Alert id:  {alert['id']}",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


def _total(rows: list[WindowStats]) -> WindowStats:
    succeeded = sum(r.succeeded for r in rows)
    failed = sum(r.failed for r in rows)
    weighted = sum((r.avg_provider_ms or 0) * r.succeeded for r in rows)
    return WindowStats(None, succeeded, failed, weighted / succeeded if succeeded else None)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
