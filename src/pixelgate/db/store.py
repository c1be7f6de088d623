"""The store: all SQL of pixelgate, one part per concern, behind one object.

| part | module |
| --- | --- |
| accounts and API keys | :mod:`pixelgate.db.accounts` |
| reading generations, events, images, batches | :mod:`pixelgate.db.reads` |
| admission of generations and batches | :mod:`pixelgate.db.admission` |
| claims, leases, running jobs' writes | :mod:`pixelgate.db.leases` |
| terminal states, cancels | :mod:`pixelgate.db.finishing` |
| money: debits, refunds, grants, usage | :mod:`pixelgate.db.ledger` |
| templates, entity links, approvals | :mod:`pixelgate.db.catalog` |
| hot configuration, webhook deliveries | :mod:`pixelgate.db.operations` |

Writes on the hot path are transaction functions group-committed by one writer per
process (:mod:`pixelgate.db.writer`); every state change of a generation is a
compare-and-set guarded by :mod:`pixelgate.core.states`, so a duplicate delivery or a
late worker is a no-op.
"""

from __future__ import annotations

from pixelgate.db.accounts import generate_key, hash_key
from pixelgate.db.catalog import CatalogStore
from pixelgate.db.finishing import FinishStore
from pixelgate.db.leases import LeaseStore
from pixelgate.db.ledger import LedgerStore
from pixelgate.db.operations import OperationsStore
from pixelgate.db.records import (
    CACHE_PROVIDER,
    AdmitResult,
    BatchView,
    CacheLookup,
    ClaimedJob,
    KeyInfo,
    LinkView,
    NewGeneration,
    NewImage,
    RunningEvent,
    TemplateView,
    WebhookDeliveryView,
)

__all__ = [
    "CACHE_PROVIDER",
    "AdmitResult",
    "BatchView",
    "CacheLookup",
    "ClaimedJob",
    "KeyInfo",
    "LinkView",
    "NewGeneration",
    "NewImage",
    "RunningEvent",
    "Store",
    "TemplateView",
    "WebhookDeliveryView",
    "generate_key",
    "hash_key",
]


class Store(FinishStore, LeaseStore, CatalogStore, LedgerStore, OperationsStore):
    """Repository over :class:`~pixelgate.db.engine.Database`; the only place that writes SQL."""
