"""One-line hooks the pipeline calls: each updates the metrics and, when on, the trace."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pixelgate.observability import metrics, tracing

if TYPE_CHECKING:
    from pixelgate.errors import ProviderError

__all__ = ["attempt_ended"]


def attempt_ended(
    provider: str, model: str | None, sent: float, failure: ProviderError | None, attempt: int
) -> None:
    """A provider attempt sent at ``sent`` (monotonic seconds) ended now."""
    ended = time.monotonic()
    error = failure.code if failure is not None else None
    metrics.provider_attempt(provider, model, ended - sent, error)
    tracing.attempt_span(provider, model, sent, ended, error, attempt)
