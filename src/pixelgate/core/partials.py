"""Partial images: previews a provider streams while it works (OpenAI's ``partial_images``).

A preview is stored as it is under ``{prefix}/partials/…`` and announced by a
``partial_image`` event naming its key (readers get its URL, like an image's). It is
never a result: no image row, no charge, no effect on the final images. A preview that
is not a PNG, JPEG or WebP, or is over ``max_image_bytes``, is dropped.
"""

from __future__ import annotations

from typing import Any

import structlog

from pixelgate.core.records import ClaimedJob
from pixelgate.errors import StorageError
from pixelgate.media.images import EXTENSIONS, FORMATS, sniff_format
from pixelgate.storage.base import Storage, partial_key

__all__ = ["PARTIAL_IMAGE", "store_partial"]

log = structlog.get_logger("pixelgate.partials")

#: the event type of a preview
PARTIAL_IMAGE = "partial_image"


async def store_partial(
    storage: Storage,
    job: ClaimedJob,
    *,
    prefix: str,
    max_bytes: int,
    provider: str,
    sequence: int,
    index: int,
    data: bytes,
    declared: str | None = None,
) -> dict[str, Any] | None:
    """Store one preview; returns the ``partial_image`` event's data, or None if dropped.

    Args:
        sequence: this job's count of previews so far (keeps racing providers' apart).
        index: the provider's own 0-based number of the preview.
        declared: the format the provider named; the bytes' own format wins.
    """
    fmt = sniff_format(data)
    if fmt not in FORMATS or len(data) > max_bytes:
        log.info(
            "partial_image_dropped",
            generation_id=job.id,
            provider=provider,
            format=fmt,
            declared=declared,
            bytes=len(data),
        )
        return None
    key = partial_key(
        prefix=prefix,
        account=job.account_name,
        project=job.project,
        created_at=job.created_at,
        generation_id=job.id,
        sequence=sequence,
        ext=EXTENSIONS[fmt],
    )
    try:
        await storage.put(key, data, FORMATS[fmt])
    except StorageError as exc:  # a preview is best effort: the job goes on
        log.warning("partial_image_not_stored", generation_id=job.id, code=exc.code)
        return None
    return {
        "index": index,
        "provider": provider,
        "format": fmt,
        "content_type": FORMATS[fmt],
        "bytes": len(data),
        "key": key,
    }
