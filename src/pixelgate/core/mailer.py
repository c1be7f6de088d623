"""E-mail to the account when a generation finally fails (seed 004), over SMTP.

Off while ``smtp_host`` is unset. One message per FAILED generation (the finish hook
runs once per terminal transition), to the account's ``email``, naming the reason,
the generation id and the request id. ``smtplib`` runs in a thread, in the finish
hook's task, so neither the event loop nor the worker waits for the mail server.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import structlog

from pixelgate.config import Settings
from pixelgate.core.finish_hooks import Finished
from pixelgate.core.models import GenerationView, Status
from pixelgate.core.ports import AccountReads

__all__ = ["FailureMailer", "failure_message"]

log = structlog.get_logger("pixelgate.mailer")

PROMPT_EXCERPT = 200


def failure_message(view: GenerationView, *, sender: str, recipient: str) -> EmailMessage:
    """The e-mail about a failed generation."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = f"pixelgate: generation {view.id} failed"
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    prompt = (
        view.prompt if len(view.prompt) <= PROMPT_EXCERPT else view.prompt[:PROMPT_EXCERPT] + "…"
    )
    lines = [
        f"Your image generation {view.id} failed.",
        "",
        f"Reason:     {view.error_code or 'unknown'}: {view.error_message or 'no details'}",
        f"Request id: {view.request_id or '-'}",
        f"Generation: {view.id}",
        f"Provider:   {view.provider or '-'}",
        f"Created:    {view.created_at.isoformat()}",
        f"Prompt:     {prompt}",
    ]
    if view.credits:
        lines.append(f"Credits:    {view.credits} (refunded unless the account keeps them)")
    message.set_content("\n".join(lines) + "\n")
    return message


class FailureMailer:
    """The finish hook that e-mails the account about a FAILED generation."""

    def __init__(self, *, settings: Settings, store: AccountReads) -> None:
        self.settings = settings
        self.store = store

    @property
    def enabled(self) -> bool:
        return bool(self.settings.smtp_host)

    async def __call__(self, finished: Finished) -> None:
        if not self.enabled or await finished.status() != Status.FAILED:
            return
        account = await self.store.get_account_cached(await finished.account_id())
        if not account.email:
            return
        view = await finished.view()
        message = failure_message(view, sender=self.settings.smtp_from, recipient=account.email)
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning(
                "failure_mail_not_sent",
                generation_id=view.id,
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        log.info("failure_mail_sent", generation_id=view.id)

    def _send(self, message: EmailMessage) -> None:
        s = self.settings
        assert s.smtp_host is not None
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.smtp_tls == "tls":
            smtp = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
        with smtp:
            if s.smtp_tls == "starttls":
                smtp.starttls(context=context)
            if s.smtp_username:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                smtp.login(s.smtp_username, password)
            smtp.send_message(message)
