"""FastAPI's OpenAPI models, built when the first OpenAPI document is rendered, not at import.

``fastapi.params`` imports ``fastapi.openapi.models``: the ~40 pydantic models of the OpenAPI
3.1 document, whose validators and serializers pydantic builds as the classes are defined —
about a twentieth of every ``pixelgate serve`` start (docs/benchmarks.md, sixth round) for
models that only ``/openapi.json`` uses. Imported here with pydantic's ``defer_build``
default on, they build at their first use instead, and the document is the same
(tests/unit/test_start_imports.py). FastAPI has no switch for it (its pull request 10546
proposed one); should pydantic's defaults move, the import is simply eager again.
"""

from __future__ import annotations

import sys

__all__ = ["import_openapi_models_deferred"]

_MODULE = "fastapi.openapi.models"


def import_openapi_models_deferred() -> None:
    """Import FastAPI (and its OpenAPI models) with model building deferred to first use;
    nothing to do once ``fastapi.openapi.models`` is imported."""
    if _MODULE in sys.modules:
        return
    try:
        from pydantic._internal._config import config_defaults
    except ImportError:  # pragma: no cover - a pydantic without it: build as usual
        return
    if config_defaults.get("defer_build") is not False:  # pragma: no cover - ditto
        return
    config_defaults["defer_build"] = True
    try:
        import fastapi.openapi.models  # noqa: F401
    finally:
        config_defaults["defer_build"] = False
