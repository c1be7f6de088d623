"""Money as JSON text: the one USD formatter of the API, the reports and the UI."""

from __future__ import annotations

import functools
from decimal import Decimal

__all__ = ["format_usd"]


def format_usd(value: Decimal | str | int | float | None) -> str | None:
    """A USD amount as plain decimal text without trailing zeros (``"0.04"``, ``"12"``).

    None (an unknown amount) stays None: it is never shown as ``"0"``.
    """
    if value is None:
        return None
    return _formatted(value)


@functools.lru_cache(maxsize=4096)
def _formatted(value: Decimal | str | int | float) -> str:
    # a few prices recur in every answer and trace: the text of each is made once
    # (equal values, of any type, have one text: the key compares by value)
    return format(Decimal(str(value)).normalize(), "f")
