"""Prometheus metrics of one pixelgate process (prometheus-client).

Every process (an API, a worker, the embedded ``serve``) counts what it does itself and
exposes its own numbers: scrape every API and worker process (``docs/operations.md``).
prometheus-client's multiprocess mode is not used: pixelgate runs one process per
server, never forked workers sharing a port, and its scrape-time gauges (queue depth,
breakers) read shared state that every process sees alike.

Counters and histograms are updated by one call each from the pipeline (the functions
below: a dictionary look-up and a locked add, about a microsecond). The gauges
:mod:`pixelgate.observability.collector` computes at scrape time cost nothing between
scrapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

if TYPE_CHECKING:
    from pixelgate.core.models import GenerationView
    from pixelgate.db.records import AdmitResult

__all__ = [
    "CACHE_HITS",
    "COST_USD",
    "CREDITS_SPENT",
    "GENERATIONS",
    "HTTP_DURATION",
    "HTTP_REQUESTS",
    "PROVIDER_DURATION",
    "PROVIDER_ERRORS",
    "REGISTRY",
    "WEBHOOK_DELIVERIES",
    "admitted",
    "generation_finished",
    "labelled",
    "provider_attempt",
    "webhook_delivered",
]

#: this process's metrics (the default global registry is left to embedders)
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

#: HTTP answers take milliseconds; provider calls seconds to minutes
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PROVIDER_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

HTTP_REQUESTS = Counter(
    "pixelgate_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ("route", "method", "status"),
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "pixelgate_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response started; streams excluded)",
    ("route", "method", "status"),
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
GENERATIONS = Counter(
    "pixelgate_generations_total",
    "Generations that reached a terminal state in this process",
    ("status", "provider", "model", "source"),
    registry=REGISTRY,
)
PROVIDER_DURATION = Histogram(
    "pixelgate_provider_request_duration_seconds",
    "Duration of one provider attempt (failed ones included)",
    ("provider", "model"),
    buckets=PROVIDER_BUCKETS,
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "pixelgate_provider_errors_total",
    "Failed provider attempts, by error kind (the error code)",
    ("provider", "model", "kind"),
    registry=REGISTRY,
)
CREDITS_SPENT = Counter(
    "pixelgate_credits_spent_total",
    "Credits charged for succeeded generations",
    ("provider",),
    registry=REGISTRY,
)
COST_USD = Counter(
    "pixelgate_cost_usd_total",
    "What providers charged, USD (as reported or priced)",
    ("provider",),
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "pixelgate_webhook_deliveries_total",
    "Webhook deliveries by final outcome (delivered, failed)",
    ("outcome",),
    registry=REGISTRY,
)
CACHE_HITS = Counter(
    "pixelgate_cache_hits_total",
    "Dedup-cache look-ups of seeded requests: hit, follower (joined a running twin), miss",
    ("outcome",),
    registry=REGISTRY,
)

NONE = "none"

#: each metric's child per label values: ``labels()`` validates, converts and locks on
#: every call (~1.5 % of a sync request's CPU, py-spy); label values are few by design
_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, made once per label values (children are never removed)."""
    key = (metric, values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child


def generation_finished(view: GenerationView | None) -> None:
    """A generation reached a terminal state (``view``: its final row)."""
    if view is None:
        return
    provider = view.provider or NONE
    labelled(GENERATIONS, view.status.value, provider, view.model or NONE, view.source).inc()
    if view.status.value == "SUCCEEDED":
        if view.credits:
            labelled(CREDITS_SPENT, provider).inc(view.credits)
        if view.cost_usd:
            labelled(COST_USD, provider).inc(float(view.cost_usd))


def provider_attempt(provider: str, model: str | None, seconds: float, error: str | None) -> None:
    """One provider attempt ended after ``seconds``; ``error``: its code if it failed."""
    model = model or NONE
    labelled(PROVIDER_DURATION, provider, model).observe(seconds)
    if error is not None:
        labelled(PROVIDER_ERRORS, provider, model, error).inc()


def admitted(result: AdmitResult, cache: bool) -> None:
    """A request was admitted (``cache``: it asked the dedup cache): counts the outcome."""
    view = result.generation
    if not result.created or not cache or view.request.get("seed") is None:
        return
    if view.cached_from is None:
        labelled(CACHE_HITS, "miss").inc()
    elif view.terminal:
        labelled(CACHE_HITS, "hit").inc()
        generation_finished(view)
    else:
        labelled(CACHE_HITS, "follower").inc()


def webhook_delivered(ok: bool) -> None:
    """A webhook delivery ended: delivered (a 2xx) or failed for good."""
    labelled(WEBHOOK_DELIVERIES, "delivered" if ok else "failed").inc()
