"""The dedup cache: which requests are identical, and when the cache applies.

Two requests of one account are identical when their normalised parameters hash the
same. Only requests with a fixed ``seed`` have a key: without one, a provider draws a new
image each time, so there is nothing to reuse. Bookkeeping fields (project, metadata,
webhook, entity links, the template and context once rendered into the prompt) are not
part of the key; everything a provider sees is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pixelgate.core.models import AccountView, GenerationRequest

__all__ = ["CACHE_KEY_VERSION", "cache_key", "wants_cache"]

#: bump when the normalisation changes, so old keys stop matching
CACHE_KEY_VERSION = 1
#: fields that do not change the image
_NOT_IN_KEY = frozenset(
    {
        "cache",
        "context",
        "entities",
        "inputs",
        "metadata",
        "partial_images",
        "project",
        "template",
        "webhook_url",
        "provider",
        "providers",
        "prompt",
        "negative_prompt",
        "width",
        "height",
    }
)


def cache_key(request: GenerationRequest) -> str | None:
    """SHA-256 of the normalised request, or ``None`` without a fixed seed.

    Normalised: whitespace runs in the prompts collapsed, ``provider`` and a one-item
    ``providers`` list the same, ``width``/``height`` resolved (no size and the default
    size are the same), empty objects dropped, keys sorted.
    """
    if request.seed is None:
        return None
    payload: dict[str, Any] = {
        k: v
        for k, v in request.model_dump(mode="json", exclude_none=True).items()
        if k not in _NOT_IN_KEY and v not in ({}, [])
    }
    width, height = request.dimensions()
    payload.update(
        v=CACHE_KEY_VERSION,
        prompt=_collapse(request.prompt),
        negative_prompt=_collapse(request.negative_prompt or "") or None,
        providers=request.candidate_names(),
        width=width,
        height=height,
    )
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def wants_cache(request: GenerationRequest, account: AccountView) -> bool:
    """``cache`` of the request, else the account's default (``settings.cache``)."""
    if request.cache is not None:
        return request.cache
    return account.settings.get("cache") is True


def _collapse(text: str) -> str:
    return " ".join(text.split())
