"""FastAPI's refusal of ``pydantic.v1`` models, without importing ``pydantic.v1`` to make it.

FastAPI checks every annotation it declares (parameters, bodies, response models) and
some objects it encodes for ``pydantic.v1`` models, and each check imports
``pydantic.v1`` (23 modules, ~40 ms of every ``pixelgate serve`` start, where nothing
else uses it) inside ``warnings.catch_warnings()``. Nothing can be a ``pydantic.v1``
model, or an instance of one, unless ``pydantic.v1`` has been imported: its classes are
made by it. So while ``pydantic.v1`` is not in ``sys.modules`` the answer is "no" without
the import, and once anything has imported it, FastAPI's own check answers as before
(tests/unit/test_pydantic_v1_check.py). Should FastAPI rename these functions, nothing is
replaced and its checks run as they are.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

__all__ = ["check_pydantic_v1_only_once_imported"]

_V1 = "pydantic.v1"
_MARK = "__pixelgate_v1_guard__"


def _guarded(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    @wraps(check)
    def guarded(value: Any) -> bool:
        return _V1 in sys.modules and check(value)

    setattr(guarded, _MARK, True)
    return guarded


def check_pydantic_v1_only_once_imported() -> None:
    """Put the guarded checks in place of FastAPI's (once; a no-op if they are missing)."""
    try:
        import fastapi._compat as compat
        import fastapi._compat.shared as shared
        import fastapi.encoders as encoders
    except ImportError:  # pragma: no cover - another FastAPI layout: leave it alone
        return
    for name, modules in (
        ("is_pydantic_v1_model_class", (shared,)),
        ("is_pydantic_v1_model_instance", (shared, compat, encoders)),
    ):
        check = getattr(shared, name, None)
        if check is None or getattr(check, _MARK, False):
            continue
        guarded = _guarded(check)
        for module in modules:
            if getattr(module, name, None) is check:
                setattr(module, name, guarded)
