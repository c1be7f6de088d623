"""Scrape-time gauges and the exposition of ``GET /metrics``.

Queue depth, the oldest job's age and the breakers' states are read when Prometheus
scrapes (one grouped query over ``generations``, one breaker snapshot read: memory, or
Redis in scale-out), never kept up to date by the pipeline. Every process reads the same
shared state, so these gauges agree across processes: aggregate them with ``max``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from pixelgate.db.observability import AlertStore
from pixelgate.observability.metrics import REGISTRY

if TYPE_CHECKING:
    from pixelgate.runtime import Runtime

__all__ = ["BREAKER_VALUES", "CONTENT_TYPE", "exposition", "scrape_gauges"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: ``pixelgate_breaker_state``: 0 closed, 1 half-open, 2 open
BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


async def scrape_gauges(runtime: Runtime) -> list[Metric]:
    """The gauges computed now from shared state."""
    depth = GaugeMetricFamily(
        "pixelgate_queue_depth",
        "Generations waiting (PENDING) or running (PROCESSING)",
        labels=["status"],
    )
    age = GaugeMetricFamily(
        "pixelgate_queue_oldest_age_seconds",
        "Age of the oldest generation in each status (0 when none)",
        labels=["status"],
    )
    now = datetime.now(UTC)
    for status, stats in (await AlertStore(runtime.db).queue()).items():
        depth.add_metric([status], stats.count)
        oldest = (now - stats.oldest).total_seconds() if stats.oldest is not None else 0.0
        age.add_metric([status], max(0.0, oldest))
    breaker = GaugeMetricFamily(
        "pixelgate_breaker_state",
        "Circuit breaker of each provider: 0 closed, 1 half-open, 2 open",
        labels=["provider"],
    )
    names = runtime.providers.names()
    snapshots = await runtime.pipeline.control.breakers.snapshots(names)
    for name in names:
        breaker.add_metric([name], BREAKER_VALUES.get(snapshots[name].state.value, 0.0))
    return [depth, age, breaker]


class _Joined:
    """The process registry and the scrape-time families, as one collector."""

    def __init__(self, extra: Iterable[Metric]) -> None:
        self.extra = list(extra)

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()
        yield from self.extra


async def exposition(runtime: Runtime) -> bytes:
    """The Prometheus text exposition of this process's metrics."""
    gauges = await scrape_gauges(runtime)
    return generate_latest(_Joined(gauges))
