"""Reads the UI needs that the store does not offer, built over its public methods.

The gallery's provider, date and approval filters and the last hour's per-provider figures
scan :meth:`Store.list_generations` pages (newest first) up to a bound; a store-side
filter would make them one query each (asked for in the UI's notes in docs/ui.md).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pixelgate.core.models import GenerationView, Status
from pixelgate.core.queries import Listings

__all__ = ["GalleryFilter", "ProviderWindow", "gallery_page", "recent_by_provider"]

SCAN_PAGE = 100
#: rows read at most for one gallery page or one "last hour" figure
MAX_SCAN = 3000


@dataclass(frozen=True)
class GalleryFilter:
    status: Status | None = None
    provider: str | None = None
    approval: str | None = None
    date_from: date | None = None
    date_to: date | None = None

    def keeps(self, view: GenerationView) -> bool:
        day = view.created_at.date()
        if self.provider and view.provider != self.provider:
            return False
        if self.date_from and day < self.date_from:
            return False
        if self.date_to and day > self.date_to:
            return False
        return not (self.approval and not any(i.approval == self.approval for i in view.images))


async def gallery_page(
    store: Listings,
    *,
    account_id: str | None,
    flt: GalleryFilter,
    cursor: str | None,
    per_page: int,
) -> tuple[list[GenerationView], str | None]:
    """One page of generations passing ``flt`` and the cursor of the next (None: last page)."""
    found: list[GenerationView] = []
    scanned = 0
    while scanned < MAX_SCAN:
        batch = await store.list_generations(
            account_id=account_id, status=flt.status, limit=SCAN_PAGE, cursor=cursor
        )
        scanned += len(batch)
        for view in batch:
            if flt.date_from and view.created_at.date() < flt.date_from:
                return found, None  # newest first: everything after is older still
            if flt.keeps(view):
                found.append(view)
                if len(found) == per_page:
                    return found, view.id
        if len(batch) < SCAN_PAGE:
            return found, None
        cursor = batch[-1].id
    return found, cursor


@dataclass
class ProviderWindow:
    """Per-provider outcomes in time buckets over a recent window."""

    buckets: list[datetime]
    total: dict[str, list[int]] = field(default_factory=dict)
    succeeded: dict[str, list[int]] = field(default_factory=dict)
    latency_ms: dict[str, list[list[int]]] = field(default_factory=dict)
    #: generations finished per bucket, all providers
    throughput: list[int] = field(default_factory=list)
    truncated: bool = False

    def success_rate(self, provider: str) -> list[float | None]:
        return [
            (100.0 * ok / n) if n else None
            for ok, n in zip(self.succeeded[provider], self.total[provider], strict=True)
        ]

    def avg_latency_s(self, provider: str) -> list[float | None]:
        return [(sum(v) / len(v) / 1000) if v else None for v in self.latency_ms[provider]]

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(self.total):
            n = sum(self.total[name])
            ok = sum(self.succeeded[name])
            lat = [v for b in self.latency_ms[name] for v in b]
            out[name] = {
                "generations": n,
                "success_rate": (100.0 * ok / n) if n else None,
                "avg_latency_s": (sum(lat) / len(lat) / 1000) if lat else None,
            }
        return out


async def recent_by_provider(
    store: Listings, *, now: datetime, window: timedelta, buckets: int
) -> ProviderWindow:
    """Finished generations of every account in ``window`` before ``now``, bucketed."""
    start = now - window
    step = window / buckets
    result = ProviderWindow(buckets=[start + step * i for i in range(buckets)])
    result.throughput = [0] * buckets
    totals: dict[str, list[int]] = defaultdict(lambda: [0] * buckets)
    oks: dict[str, list[int]] = defaultdict(lambda: [0] * buckets)
    lats: dict[str, list[list[int]]] = defaultdict(lambda: [[] for _ in range(buckets)])
    cursor: str | None = None
    scanned = 0
    while True:
        batch = await store.list_generations(account_id=None, limit=SCAN_PAGE, cursor=cursor)
        scanned += len(batch)
        for view in batch:
            if view.created_at < start:
                batch = []
                break
            if not view.terminal or view.completed_at is None or view.status == Status.CANCELED:
                continue
            i = min(buckets - 1, int((view.completed_at - start) / step))
            if i < 0:
                continue
            name = view.provider or "(none)"
            totals[name][i] += 1
            result.throughput[i] += 1
            if view.status == Status.SUCCEEDED:
                oks[name][i] += 1
                if view.provider_ms is not None:
                    lats[name][i].append(view.provider_ms)
        if len(batch) < SCAN_PAGE:
            break
        if scanned >= MAX_SCAN:
            result.truncated = True
            break
        cursor = batch[-1].id
    result.total, result.succeeded, result.latency_ms = dict(totals), dict(oks), dict(lats)
    for name in result.total:
        result.succeeded.setdefault(name, [0] * buckets)
        result.latency_ms.setdefault(name, [[] for _ in range(buckets)])
    return result
