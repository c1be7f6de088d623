"""What the API and the UI read and change outside the pipeline, as protocols.

Satisfied by :class:`pixelgate.db.store.Store` (:class:`ApiRecords`) and
:class:`pixelgate.db.reports.Reports` (:class:`ReportReads`); the composition root
(:mod:`pixelgate.runtime`) hands them over as :class:`pixelgate.core.services.Services`.
Routes never hold the store, a session or a connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from pixelgate.core.models import AccountView, GenerationView, ImageView, Status
from pixelgate.core.ports import AccountReads, Clocked, GenerationReads
from pixelgate.core.records import (
    BatchView,
    KeyInfo,
    LinkView,
    Quota,
    QuotaState,
    TemplateView,
    WebhookDeliveryView,
)

__all__ = ["AccountAdmin", "ApiRecords", "Catalog", "HotConfig", "Listings", "ReportReads"]


class Listings(Protocol):
    """Pages of generations and batches, images, the newest event id."""

    async def list_generations(
        self,
        *,
        account_id: str | None,
        status: Status | None = None,
        limit: int = 20,
        cursor: str | None = None,
        batch_id: str | None = None,
        entity: tuple[str, str | None] | None = None,
    ) -> list[GenerationView]: ...

    async def list_batches(
        self, *, account_id: str | None, limit: int = 20, cursor: str | None = None
    ) -> list[BatchView]: ...

    async def get_image(
        self, image_id: str, *, account_id: str | None
    ) -> tuple[ImageView, str]: ...

    async def last_event_id(self) -> int: ...

    async def queue_depth(self) -> dict[str, int]: ...

    async def list_webhook_deliveries(
        self, *, account_id: str | None, generation_id: str | None = None, limit: int = 50
    ) -> list[WebhookDeliveryView]: ...


class Catalog(Protocol):
    """Templates, entity links, image approvals."""

    async def create_template(
        self,
        account_id: str,
        *,
        name: str,
        text: str,
        placeholders: list[str],
        description: str | None,
    ) -> TemplateView: ...

    async def list_templates(self, account_id: str) -> list[TemplateView]: ...

    async def delete_template(self, account_id: str, ref: str) -> TemplateView: ...

    async def set_approval(
        self, image_id: str, approval: str, *, account_id: str | None
    ) -> tuple[ImageView, str]: ...

    async def add_links(
        self, gen_id: str, entities: Sequence[tuple[str, str]], *, account_id: str | None
    ) -> list[LinkView]: ...

    async def list_links(self, gen_id: str, *, account_id: str | None) -> list[LinkView]: ...


class AccountAdmin(Protocol):
    """Accounts, keys, credits and spending."""

    async def find_account(self, name: str) -> AccountView | None: ...

    async def list_accounts(self) -> list[AccountView]: ...

    async def create_account(
        self,
        name: str,
        *,
        tier: str = "FREE",
        credits: int | None = None,
        actor: str = "system",
        credit_policy: str = "refund",
        email: str | None = None,
    ) -> AccountView: ...

    async def update_account(
        self, account_id: str, *, keep_an_admin: bool = True, **fields: Any
    ) -> AccountView: ...

    async def grant_credits(
        self, account_id: str, credits: int, *, reason: str, actor: str
    ) -> int: ...

    async def lookup_key(self, key_hash: str) -> KeyInfo | None: ...

    async def create_key(
        self,
        account_id: str,
        *,
        is_admin: bool = False,
        name: str | None = None,
        plain: str | None = None,
    ) -> tuple[str, str]: ...

    async def list_keys(self) -> list[dict[str, Any]]: ...

    async def revoke_key(self, key_id: str) -> str:
        """Returns the revoked key's hash."""
        ...

    async def spending(
        self, account_id: str, quota: Quota | None, now: datetime
    ) -> tuple[Decimal, QuotaState | None]:
        """USD spent today and the state of the generation quota."""
        ...

    async def account_routing(self, account_id: str) -> tuple[list[str], dict[str, Any]]: ...

    async def set_account_routing(
        self, account_id: str, routing: dict[str, Any] | None
    ) -> None: ...


class HotConfig(Protocol):
    """Versions of the hot routing configuration."""

    async def config_versions(self, limit: int = 20) -> list[dict[str, Any]]: ...

    async def save_config(
        self, data: dict[str, Any], *, actor: str | None, expected_version: int | None = None
    ) -> dict[str, Any]: ...


class ApiRecords(
    Clocked, AccountReads, GenerationReads, Listings, Catalog, AccountAdmin, HotConfig, Protocol
):
    """Everything the routes read and change through the store of records."""


class ReportReads(Protocol):
    """Aggregations: usage per day, stats over all accounts, ledgers, projects."""

    async def usage(
        self, *, account_id: str | None, first_day: date, last_day: date
    ) -> list[dict[str, Any]]: ...

    async def stats(self, *, first_day: date, last_day: date) -> dict[str, Any]: ...

    async def ledger(self, account_id: str, *, limit: int = 100) -> list[dict[str, Any]]: ...

    async def projects(self, account_id: str) -> list[str]: ...
