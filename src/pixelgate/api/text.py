"""Text a database cannot store is refused at the door, naming where it was.

JSON may carry ``\\u0000`` and unpaired surrogates (``\\ud800``), and a URL may carry
``%00``; PostgreSQL refuses both in text columns, so such a request would fail with a 500
deep inside a transaction. Every route runs :func:`refuse_unstorable_text` (a dependency
added in ``create_app``): 422 ``invalid_request`` with the field's path.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from pixelgate.errors import ValidationFailed

__all__ = ["MESSAGE", "SUSPECT_MARKERS", "refuse_unstorable_text", "unstorable_path"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: a body without a NUL byte or a ``\u`` escape cannot hold either: no parsing needed
SUSPECT_MARKERS = (b"\x00", b"\\u")
MESSAGE = "contains a NUL character or an unpaired surrogate, which cannot be stored"


def _bad(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def unstorable_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) that cannot be stored, else None."""
    if isinstance(value, str):
        return (path or "body") if _bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _bad(key):
                return path or "body"
            found = unstorable_path(item, child)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable_path(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


async def refuse_unstorable_text(request: Request) -> None:
    """A route dependency: query, path and JSON body strings must be storable."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if isinstance(value, str) and _bad(value):
            raise ValidationFailed(name, MESSAGE)
    if request.method not in _BODY_METHODS:
        return
    if "json" not in request.headers.get("content-type", "").lower():
        return
    body = await request.body()  # cached: the route's own parsing reads the same bytes
    if not any(marker in body for marker in SUSPECT_MARKERS):
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        return  # malformed JSON: the route's validation answers it
    found = unstorable_path(parsed)
    if found is not None:
        raise ValidationFailed(found, MESSAGE)
