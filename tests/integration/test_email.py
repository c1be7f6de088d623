"""E-mail on final failure, received by a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from typer.testing import CliRunner

from pixelgate.api.app import create_app
from pixelgate.cli import app as cli_app
from pixelgate.config import Settings, load_settings
from pixelgate.core.models import GenerationRequest
from pixelgate.runtime import Runtime

WAIT = {"Prefer": "wait=10"}


class Inbox:
    """An aiosmtpd handler that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append((envelope, message_from_bytes(content)))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings], smtp_server: tuple[Inbox, int]
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient, Inbox, Any]]:
    inbox, port = smtp_server
    settings = make_settings(
        providers={
            "fast": {"kind": "placeholder"},
            "broken": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "refused"},
        },
        routing={"default": ["fast"]},
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        smtp_from="pixelgate@gateway.test",
    )
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    account = await runtime.store.create_account(
        "mailer", tier="PRO", credits=10, email="owner@example.test"
    )
    _, key = await runtime.store.create_key(account.id)
    app = create_app(settings, runtime=runtime, run_worker=False)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": "req_mailtest"},
    )
    try:
        yield runtime, client, inbox, account
    finally:
        await client.aclose()
        await runtime.close()


async def test_a_failed_generation_mails_the_account_once(
    env: tuple[Runtime, httpx.AsyncClient, Inbox, Any],
) -> None:
    runtime, client, inbox, _ = env
    r = await client.post(
        "/v1/generations", json={"prompt": "a forbidden thing", "provider": "broken"}, headers=WAIT
    )
    body = r.json()
    assert body["status"] == "FAILED"
    await runtime.pipeline.drain_hooks()
    [(envelope, message)] = inbox.messages
    assert envelope.mail_from == "pixelgate@gateway.test"
    assert envelope.rcpt_tos == ["owner@example.test"]
    assert message["To"] == "owner@example.test"
    assert body["id"] in message["Subject"]
    text = message.get_payload(decode=True).decode()
    assert body["error"]["code"] in text and body["error"]["message"] in text
    assert "req_mailtest" in text and body["id"] in text


async def test_no_mail_for_success_or_cancel(
    env: tuple[Runtime, httpx.AsyncClient, Inbox, Any],
) -> None:
    runtime, client, inbox, _ = env
    ok = await client.post("/v1/generations", json={"prompt": "fine"}, headers=WAIT)
    assert ok.json()["status"] == "SUCCEEDED"
    await runtime.pipeline.drain_hooks()
    assert inbox.messages == []


async def test_no_mail_without_an_address(
    env: tuple[Runtime, httpx.AsyncClient, Inbox, Any],
) -> None:
    runtime, client, inbox, account = env
    await runtime.store.update_account(account.id, email=None)
    r = await client.post(
        "/v1/generations", json={"prompt": "x", "provider": "broken"}, headers=WAIT
    )
    assert r.json()["status"] == "FAILED"
    await runtime.pipeline.drain_hooks()
    assert inbox.messages == []


async def test_mail_is_off_without_smtp_host(
    make_settings: Callable[..., Settings], smtp_server: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp_server
    settings = make_settings(
        providers={"broken": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "invalid"}},
        routing={"default": ["broken"]},
    )
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    try:
        caller = await runtime.local_caller()
        await runtime.store.update_account(caller.account_id, email="admin@example.test")
        result = await runtime.pipeline.admit(caller, GenerationRequest(prompt="x"))
        view = await runtime.pipeline.wait(result.generation.id, 10)
        assert view.status == "FAILED"
        await runtime.pipeline.drain_hooks()
        assert inbox.messages == []
    finally:
        await runtime.close()


class _LogRecorder:
    """Stands in for a module's structlog logger: keeps every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _record(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    info = warning = error = exception = debug = _record


async def test_an_unreachable_mail_server_does_not_break_anything(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mail is attempted and its failure logged; the job's end, its refund and the
    next job are untouched."""
    from pixelgate.core import mailer
    from pixelgate.core.pipeline import Caller

    logs = _LogRecorder()
    monkeypatch.setattr(mailer, "log", logs)

    settings = make_settings(
        providers={
            "broken": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "invalid"},
            "fast": {"kind": "placeholder"},
        },
        routing={"default": ["broken"]},
        smtp_host="127.0.0.1",
        smtp_port=_free_port(),
        smtp_tls="none",
    )
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    try:
        account = await runtime.store.create_account("ops", tier="PRO", credits=5)
        await runtime.store.update_account(account.id, email="ops@example.test")
        caller = Caller(account_id=account.id, account_name="ops")
        result = await runtime.pipeline.admit(caller, GenerationRequest(prompt="x"))
        view = await runtime.pipeline.wait(result.generation.id, 10)
        await runtime.pipeline.drain_hooks()
        assert view.status == "FAILED"
        [attempt] = [e for e in logs.events if e["event"] == "failure_mail_not_sent"]
        assert attempt["generation_id"] == view.id
        assert "ConnectionRefusedError" in attempt["error"]
        assert (await runtime.store.get_account(account.id)).credits == 5  # refunded
        after = await runtime.pipeline.admit(
            caller, GenerationRequest(prompt="y", provider="fast", width=32, height=32)
        )
        assert (await runtime.pipeline.wait(after.generation.id, 10)).status == "SUCCEEDED"
    finally:
        await runtime.close()


def test_the_cli_sets_the_account_address(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELGATE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    made = runner.invoke(cli_app, ["accounts", "create", "ops", "--email", "ops@example.test"])
    assert made.exit_code == 0, made.output
    bad = runner.invoke(cli_app, ["accounts", "create", "ops2", "--email", "not-an-address"])
    assert bad.exit_code == 2

    async def email_of(name: str) -> str | None:
        runtime = await Runtime.open(load_settings(), bootstrap_admin=False)
        try:
            account = await runtime.store.find_account(name)
            assert account is not None
            return account.email
        finally:
            await runtime.close()

    assert asyncio.run(email_of("ops")) == "ops@example.test"
