"""Hard bounds on what a request may carry, whatever the configuration says.

Configurable limits (prompt length, ``n``, dimensions) are checked at admission; these are
the outer walls the schemas carry, so that no value can overflow a column, bloat a row or
make a listing answer megabytes. The OpenAPI document shows them (``maxLength``,
``maximum``…).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

__all__ = [
    "FORMAT_PATTERN",
    "MAX_CREDITS",
    "MAX_JSON_DEPTH",
    "MAX_JSON_KEYS",
    "MAX_METADATA_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_SIDE",
    "MAX_TEXT_LENGTH",
    "MAX_USD",
    "URL_PATTERN",
    "BoundedJson",
    "Credits",
    "ShortText",
    "check_json",
]

#: credits in one grant and in one balance: far inside a signed 64-bit column, so that
#: sums of a few balances cannot leave it either
MAX_CREDITS = 10**15
#: any USD amount a request or an account may name
MAX_USD = 10**9
#: widest side an image may be requested at (admission applies ``max_dimension``)
MAX_SIDE = 65_536
#: ``n`` (admission applies ``max_n``)
MAX_N = 1000
#: prompts and other long free text (admission applies ``max_prompt_length``)
MAX_TEXT_LENGTH = 32_000
#: names, models, styles, qualities: short identifiers
MAX_NAME_LENGTH = 256
#: what a user URL looks like before its host is checked (``media/fetch.py`` decides the rest)
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s\\@]+$"
#: image formats a seed route may name (normalised to png, jpeg or webp)
FORMAT_PATTERN = r"^([Pp][Nn][Gg]|[Jj][Pp][Ee]?[Gg]|[Ww][Ee][Bb][Pp])$"
#: ``metadata`` and ``options`` objects: serialized size, nesting depth, keys in total
MAX_METADATA_BYTES = 16 * 1024
MAX_JSON_DEPTH = 8
MAX_JSON_KEYS = 256


def _walk(value: Any, depth: int) -> tuple[int, int]:
    """``(deepest level, keys)`` of a JSON value; objects and arrays count as levels."""
    if isinstance(value, dict):
        deepest, keys = depth, len(value)
        for item in value.values():
            d, k = _walk(item, depth + 1)
            deepest, keys = max(deepest, d), keys + k
        return deepest, keys
    if isinstance(value, list):
        deepest, keys = depth, 0
        for item in value:
            d, k = _walk(item, depth + 1)
            deepest, keys = max(deepest, d), keys + k
        return deepest, keys
    return depth - 1, 0


def check_json(value: dict[str, Any]) -> dict[str, Any]:
    """A pydantic after-validator: ``value`` within size, depth and key-count bounds."""
    if not value:  # the usual case, within every bound: no walk, no serialising
        return value
    deepest, keys = _walk(value, 1)
    if deepest > MAX_JSON_DEPTH:
        raise PydanticCustomError(
            "json_too_deep", "nested deeper than {max} levels", {"max": MAX_JSON_DEPTH}
        )
    if keys > MAX_JSON_KEYS:
        raise PydanticCustomError(
            "json_too_many_keys", "more than {max} keys in total", {"max": MAX_JSON_KEYS}
        )
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise PydanticCustomError(
            "json_too_large",
            "{size} bytes serialized; at most {max}",
            {"size": size, "max": MAX_METADATA_BYTES},
        )
    return value


#: a free-form JSON object (``metadata``, ``options``) with the bounds above
BoundedJson = Annotated[dict[str, Any], AfterValidator(check_json)]
#: a short identifier-like string (model, style, quality, provider names)
ShortText = Annotated[str, Field(max_length=MAX_NAME_LENGTH)]
#: a credit amount that a grant or a balance may hold
Credits = Annotated[int, Field(ge=-MAX_CREDITS, le=MAX_CREDITS)]
