"""The URL rule every request meets before admission writes anything.

What can be decided without DNS is decided here, so that a request carrying a literal
loopback, private or metadata address is refused with 422 ``unsafe_url`` before anything
is written, charged or counted against a quota. Admission runs it for every caller (CLI,
Python API, batch files); HTTP entry points also run it themselves first, to name the
field in their own spelling (``referenceImageUrl``). Host names are resolved and checked
again when the worker fetches (``media/fetch.py``), as are redirects.
"""

from __future__ import annotations

from collections.abc import Mapping

from pixelgate.config import Settings
from pixelgate.core.models import GenerationRequest
from pixelgate.errors import UnsafeURL
from pixelgate.media.fetch import check_literal_url

__all__ = ["URL_FIELDS", "refuse_unsafe_urls"]

#: request fields holding a URL the gateway will fetch or call
URL_FIELDS = ("reference_image_url", "image_url", "mask_url", "webhook_url")


def refuse_unsafe_urls(
    request: GenerationRequest,
    settings: Settings,
    *,
    prefix: str = "",
    names: Mapping[str, str] | None = None,
) -> None:
    """Refuse the request when one of its URLs is an unsafe IP literal.

    Args:
        prefix: put before the field name (``requests[3].`` in a batch).
        names: the entry point's own spelling of a field (``referenceImageUrl``).

    Raises:
        UnsafeURL: naming the field (422 ``unsafe_url``).
    """
    for name in URL_FIELDS:
        url = getattr(request, name)
        if url is None:
            continue
        field = prefix + (names or {}).get(name, name)
        webhook = name == "webhook_url"
        allow = settings.webhook_allow_hosts if webhook else settings.fetch_allow_hosts
        try:
            check_literal_url(url, allow_hosts=allow, what=field)
        except UnsafeURL as exc:
            raise UnsafeURL(exc.message, field=field) from None
