"""E-mail over SMTP: ``smtplib`` in a thread, so the event loop never waits on the server."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from pixelgate.config import Settings
from pixelgate.core.mailer import MailNotSent

__all__ = ["SmtpSender"]


class SmtpSender:
    """The :class:`~pixelgate.core.mailer.MailSender` of ``smtp_*`` settings (plain, STARTTLS
    or TLS, optional login)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailNotSent(f"{type(exc).__name__}: {exc}") from exc

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
