"""What core needs from the storage of records, as protocols split by concern.

:class:`pixelgate.db.store.Store` satisfies all of them (:class:`RecordStore`); the
composition root (:mod:`pixelgate.runtime`) hands it over, and each core part types
against the narrowest protocol it uses. The records themselves are in
:mod:`pixelgate.core.records`.

| protocol | what |
| --- | --- |
| :class:`Clocked` | the store's clock (times written next to its rows) |
| :class:`AccountReads` | accounts |
| :class:`GenerationReads` | generations, events, batches, templates |
| :class:`Admissions` | admitting generations and batches (one transaction each) |
| :class:`JobWrites` | a running job's provider job id and events |
| :class:`Finishes` | terminal states, fallback images, cancels |
| :class:`DeliveryLog` | the webhook delivery log |

and what each part of core takes, made of them: :class:`AttemptRecords`,
:class:`ExecutionRecords`, :class:`FinishRecords`, :class:`DeliveryRecords`,
:class:`RecordStore` (everything: the pipeline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from pixelgate.core.models import AccountView, EventView, GenerationView
from pixelgate.core.records import (
    AdmitResult,
    BatchView,
    CacheLookup,
    NewGeneration,
    NewImage,
    Quota,
    RunningEvent,
    TemplateView,
)
from pixelgate.resilience.routing_control import ConfigSource

__all__ = [
    "AccountReads",
    "Admissions",
    "AttemptRecords",
    "Clocked",
    "DeliveryLog",
    "DeliveryRecords",
    "ExecutionRecords",
    "FinishRecords",
    "Finishes",
    "GenerationReads",
    "JobWrites",
    "RecordStore",
]


class Clocked(Protocol):
    """The clock whose times the store writes (tests move it)."""

    @property
    def clock(self) -> Callable[[], datetime]: ...


class AccountReads(Protocol):
    """Accounts, read."""

    async def get_account(self, account_id: str) -> AccountView:
        """The account now; raises ``NotFound``."""
        ...

    async def get_account_cached(self, account_id: str) -> AccountView:
        """The account as of a few seconds ago (never used for money)."""
        ...

    def peek_account_cached(self, account_id: str) -> AccountView | None:
        """What :meth:`get_account_cached` holds for the account now, without reading."""
        ...


class GenerationReads(Protocol):
    """Generations, their events, batches and templates, read."""

    async def get_generation(self, gen_id: str, *, account_id: str | None = None) -> GenerationView:
        """The generation; raises ``NotFound`` (also when owned by another account)."""
        ...

    async def status_of(self, gen_id: str) -> tuple[str, bool] | None:
        """``(status, cancel_requested)``, or None for an unknown id."""
        ...

    async def events_after(self, gen_id: str, after_id: int = 0) -> list[EventView]: ...

    async def account_events_after(
        self, account_id: str, after_id: int, *, limit: int, up_to: int | None = None
    ) -> list[EventView]: ...

    async def get_batch(self, batch_id: str, *, account_id: str | None) -> BatchView: ...

    async def find_template(self, account_id: str, ref: str) -> TemplateView | None: ...

    async def settled_followers(self, leader_id: str, completed_at: Any) -> list[str]:
        """The followers of a cache leader settled with it."""
        ...


class Admissions(Protocol):
    """Admission: the generation (or batch), its first events and its debit, at once."""

    async def admit(
        self,
        *,
        account_id: str,
        project: str,
        prompt: str,
        request: dict[str, Any],
        request_hash: str,
        source: str,
        credits: int,
        estimated_usd: Decimal | None,
        idempotency_key: str | None,
        request_id: str | None,
        quota: Quota | None = None,
        cache: CacheLookup | None = None,
        entities: Sequence[tuple[str, str]] = (),
        account_name: str | None = None,
        lease_to: str | None = None,
        lease_s: float = 30.0,
    ) -> AdmitResult: ...

    async def admit_batch(
        self,
        *,
        account_id: str,
        members: Sequence[NewGeneration],
        concurrency: int | None,
        metadata: dict[str, Any],
        source: str,
        request_id: str | None,
        quota: Quota | None = None,
        idempotency_key: str | None = None,
        request_hash: str = "",
    ) -> BatchView: ...


class JobWrites(Protocol):
    """What a running job writes before it finishes."""

    async def save_provider_job(self, gen_id: str, provider: str, job_id: str) -> None: ...

    async def clear_provider_job(self, gen_id: str) -> None: ...

    async def add_running_events(self, events: Sequence[RunningEvent]) -> list[str]:
        """Writes events of running jobs; returns the generation ids that got one."""
        ...


class Finishes(Protocol):
    """Terminal states (each a compare-and-set by the owner), fallback images, cancels."""

    async def finish_succeeded(
        self,
        gen_id: str,
        owner: str,
        *,
        provider: str,
        model: str,
        images: Sequence[NewImage],
        cost_usd: Decimal | None,
        provider_ms: int | None,
        route: list[dict[str, Any]],
        account_id: str,
        fallback_image: bool = False,
        pending: Sequence[RunningEvent] = (),
        account_name: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> GenerationView | None: ...

    async def finish_failed(
        self,
        gen_id: str,
        owner: str | None,
        *,
        code: str,
        message: str,
        route: list[dict[str, Any]],
        account_id: str,
        provider: str | None = None,
        model: str | None = None,
        pending: Sequence[RunningEvent] = (),
        account_name: str | None = None,
    ) -> GenerationView | None: ...

    async def finish_canceled(
        self,
        gen_id: str,
        owner: str,
        *,
        route: list[dict[str, Any]],
        pending: Sequence[RunningEvent] = (),
        account_name: str | None = None,
    ) -> GenerationView | None: ...

    async def attach_fallback_image(
        self, gen_id: str, owner: str, image: NewImage, *, account_id: str
    ) -> bool: ...

    async def cancel(self, gen_id: str, *, account_id: str | None) -> tuple[GenerationView, bool]:
        """Cancels or flags; returns the generation and whether it ended now."""
        ...

    async def cancel_batch(
        self, batch_id: str, *, account_id: str | None
    ) -> tuple[list[str], list[str]]: ...


class DeliveryLog(Protocol):
    """The webhook delivery log."""

    async def create_webhook_delivery(
        self, *, generation_id: str, account_id: str, event: str, url: str, payload: str
    ) -> str | None: ...

    async def record_webhook_attempt(
        self,
        delivery_id: str,
        *,
        status: str,
        attempts: int,
        response_status: int | None,
        error: str | None,
    ) -> None: ...


class RecordStore(
    Clocked,
    AccountReads,
    GenerationReads,
    Admissions,
    JobWrites,
    Finishes,
    DeliveryLog,
    ConfigSource,
    Protocol,
):
    """Everything core needs of the store of records (the pipeline's whole view of it)."""


class AttemptRecords(Clocked, JobWrites, Protocol):
    """What one provider attempt writes (:mod:`pixelgate.core.attempts`)."""


class ExecutionRecords(Clocked, AccountReads, JobWrites, Protocol):
    """What running a job reads and writes (:mod:`pixelgate.core.execution`)."""


class FinishRecords(GenerationReads, Finishes, Protocol):
    """What finishing and cancelling need (:mod:`pixelgate.core.finishing`)."""


class DeliveryRecords(AccountReads, DeliveryLog, Protocol):
    """What webhook delivery needs (:mod:`pixelgate.core.webhooks`)."""
