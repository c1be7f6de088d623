"""E-mail to the account when a generation finally fails (seed 004).

Off while ``smtp_host`` is unset. One message per FAILED generation (the finish hook
runs once per terminal transition), to the account's ``email``, naming the reason,
the generation id and the request id. The message goes through a :class:`MailSender`
(SMTP: :class:`pixelgate.delivery.smtp.SmtpSender`), in the finish hook's task, so
the worker never waits for the mail server.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

import structlog

from pixelgate.config import Settings
from pixelgate.core.finish_hooks import Finished
from pixelgate.core.models import GenerationView, Status
from pixelgate.core.ports import AccountReads

__all__ = ["FailureMailer", "MailNotSent", "MailSender", "failure_message"]

log = structlog.get_logger("pixelgate.mailer")

PROMPT_EXCERPT = 200


class MailNotSent(Exception):
    """The mail server could not be reached or refused the message (the reason is the text)."""


class MailSender(Protocol):
    """Sends one e-mail; raises :class:`MailNotSent` when it cannot."""

    async def send(self, message: EmailMessage) -> None: ...


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

    def __init__(self, *, settings: Settings, store: AccountReads, sender: MailSender) -> None:
        self.settings = settings
        self.store = store
        self.sender = sender

    @property
    def enabled(self) -> bool:
        return bool(self.settings.smtp_host)

    def skips(self, finished: Finished) -> bool:
        """No mail server, or a status known not to be ``FAILED``: nothing to send."""
        status = finished.known_status
        return not self.enabled or (status is not None and status != Status.FAILED)

    async def __call__(self, finished: Finished) -> None:
        if not self.enabled or await finished.status() != Status.FAILED:
            return
        account = await self.store.get_account_cached(await finished.account_id())
        if not account.email:
            return
        view = await finished.view()
        message = failure_message(view, sender=self.settings.smtp_from, recipient=account.email)
        try:
            await self.sender.send(message)
        except MailNotSent as exc:
            log.warning("failure_mail_not_sent", generation_id=view.id, error=str(exc))
            return
        log.info("failure_mail_sent", generation_id=view.id)
