"""One-line hooks the pipeline calls: each updates the metrics and, when on, the trace."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import structlog

from pixelgate.observability import metrics, tracing

if TYPE_CHECKING:
    from pixelgate.core.models import GenerationView
    from pixelgate.errors import ProviderError

__all__ = ["attempt_ended", "generation_finished"]

log = structlog.get_logger("pixelgate.generations")


def generation_finished(view: GenerationView | None) -> None:
    """A generation reached a terminal state: count it, and log it (a failure or a
    cancel at info, a success at debug: one line per job costs more than the job's
    metrics)."""
    if view is None:
        return
    metrics.generation_finished(view)
    status = view.status.value
    succeeded = status == "SUCCEEDED"
    if succeeded and not log.is_enabled_for(logging.DEBUG):
        return  # the line would be dropped: do not build it
    emit = log.debug if succeeded else log.info
    timings = view.timings()
    emit(
        "generation_finished",
        generation_id=view.id,
        request_id=view.request_id,
        account=view.account_name,
        status=status,
        provider=view.provider,
        model=view.model,
        source=view.source,
        duration_ms=timings.get("total_ms"),
        provider_ms=view.provider_ms,
        error=view.error_code,
    )


def attempt_ended(
    provider: str, model: str | None, sent: float, failure: ProviderError | None, attempt: int
) -> None:
    """A provider attempt sent at ``sent`` (monotonic seconds) ended now."""
    ended = time.monotonic()
    error = failure.code if failure is not None else None
    metrics.provider_attempt(provider, model, ended - sent, error)
    tracing.attempt_span(provider, model, sent, ended, error, attempt)
