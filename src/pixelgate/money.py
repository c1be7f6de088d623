"""Money as JSON text: the one USD formatter of the API, the reports and the UI."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["format_usd"]


def format_usd(value: Decimal | str | int | float | None) -> str | None:
    """A USD amount as plain decimal text without trailing zeros (``"0.04"``, ``"12"``).

    None (an unknown amount) stays None: it is never shown as ``"0"``.
    """
    if value is None:
        return None
    return format(Decimal(str(value)).normalize(), "f")
