"""pixelgate: a self-hosted, provider-agnostic AI image-generation gateway.

The public Python API (imported lazily so ``import pixelgate`` stays cheap)::

    from pixelgate import Pixelgate, generate, agenerate
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = [
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "Pixelgate",
    "Settings",
    "__version__",
    "agenerate",
    "generate",
    "load_settings",
]

if TYPE_CHECKING:
    from pixelgate.config import Settings, load_settings
    from pixelgate.core.models import GenerationRequest
    from pixelgate.sdk import GeneratedImage, GenerationResult, Pixelgate, agenerate, generate

_LAZY = {
    "Pixelgate": "pixelgate.sdk",
    "GeneratedImage": "pixelgate.sdk",
    "GenerationResult": "pixelgate.sdk",
    "agenerate": "pixelgate.sdk",
    "generate": "pixelgate.sdk",
    "Settings": "pixelgate.config",
    "load_settings": "pixelgate.config",
    "GenerationRequest": "pixelgate.core.models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pixelgate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
