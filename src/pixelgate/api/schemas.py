"""Response shapes of the native API (dicts built directly: no per-request model validation)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pixelgate.core.models import GenerationView, ImageView, Status
from pixelgate.logs import redact_text
from pixelgate.money import format_usd

__all__ = ["generation_body", "image_body", "iso"]

#: rough time per job used for ``eta_ms`` while a generation waits
ETA_PER_JOB_MS = 2000


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def image_body(image: ImageView) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": image.id,
        "url": image.url,
        "key": image.key,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "bytes": image.bytes,
        "sha256": image.sha256,
        "approval": image.approval,
    }
    if image.attribution:
        body["attribution"] = image.attribution
    return body


def _redacted_step(step: dict[str, Any]) -> dict[str, Any]:
    message = step.get("message")
    return {**step, "message": redact_text(message)} if isinstance(message, str) else step


def generation_body(view: GenerationView) -> dict[str, Any]:
    error = None
    if view.error_code:
        # a provider's message may echo what it was sent (a key, a token): mask those
        message = redact_text(view.error_message) if view.error_message else None
        error = {"code": view.error_code, "message": message}
    body: dict[str, Any] = {
        "id": view.id,
        "object": "generation",
        "status": view.status.value,
        "progress": view.progress,
        "prompt": view.prompt,
        "project": view.project,
        "provider": view.provider,
        "model": view.model,
        "retry_count": view.retry_count,
        "last_retry_at": iso(view.last_retry_at),
        "created_at": iso(view.created_at),
        "updated_at": iso(view.updated_at),
        "completed_at": iso(view.completed_at),
        "error": error,
        "cost": {
            "credits": view.credits,
            "usd": format_usd(view.cost_usd),
            "estimated_usd": format_usd(view.estimated_usd),
        },
        "timings": view.timings(),
        "images": [image_body(i) for i in view.images],
        "route": [_redacted_step(step) for step in view.route],
        "request": {k: v for k, v in view.request.items() if not k.startswith("__")},
        "request_id": view.request_id,
    }
    if view.status == Status.PENDING:
        body["queue_position"] = view.queue_position or 0
        body["eta_ms"] = (body["queue_position"] + 1) * ETA_PER_JOB_MS
    if view.cancel_requested and not view.terminal:
        body["cancel_requested"] = True
    if view.fallback_image:
        body["fallback_image"] = True
    body["cached"] = view.cached_from is not None
    if view.cached_from is not None:
        body["cached_from"] = view.cached_from
    if view.batch_id is not None:
        body["batch_id"] = view.batch_id
    return body
