"""``GET /config`` (seed 001): the public settings any key may read, never a secret."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pixelgate import __version__
from pixelgate.api.deps import CurrentCaller, RuntimeDep
from pixelgate.api.responses import JSONResponse
from pixelgate.storage.base import CACHE_CONTROL

router = APIRouter(tags=["config"])


@router.get("/config")
async def public_config(runtime: RuntimeDep, _caller: CurrentCaller) -> JSONResponse:
    """Seed 001's ``GET /config``: what a client may know, no keys, tokens or URLs."""
    control = runtime.pipeline.control
    routing = await control.current()
    providers: dict[str, Any] = {}
    for provider in runtime.providers:
        override = routing.providers.get(provider.name)
        attempts = control.retry_for(provider.name).attempts
        providers[provider.name] = {
            "kind": provider.kind,
            "configured": provider.configured,
            "enabled": provider.configured and control.enabled(provider.name),
            "timeout": int(control.timeout_for(provider.name) * 1000),
            "retries": attempts - 1,
            "priority": control.priority(provider.name),
            "default_model": provider.default_model if provider.models else None,
            "quality": override.quality if override else None,
        }
    settings = runtime.settings
    return JSONResponse(
        {
            "service": "pixelgate",
            "version": __version__,
            "config_version": control.version,
            "routing": {
                "chain": control.chain(),
                **routing.model_dump(
                    mode="json",
                    include={
                        "policy",
                        "fallback_image",
                        "fallback_on_refusal",
                        "deadline_s",
                        "race",
                        "hedge",
                        "retry",
                        "breaker",
                        "outbound",
                    },
                ),
            },
            "providers": providers,
            "r2": {"pathPrefix": settings.storage_prefix, "cacheControl": CACHE_CONTROL},
            "defaults": {
                "timeout": int(settings.sync_timeout_s * 1000),
                "max_n": settings.max_n,
                "max_dimension": settings.max_dimension,
                "formats": ["png", "jpeg", "webp"],
            },
        }
    )
