"""Provider catalog: ``GET /v1/providers`` and seed 004's ``GET /api/health/providers``."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pixelgate.api.deps import CurrentCaller, RuntimeDep
from pixelgate.providers.base import Health, Provider

router = APIRouter(tags=["providers"])
HEALTH_TIMEOUT_S = 5.0


async def check_health(provider: Provider) -> Health:
    try:
        return await asyncio.wait_for(provider.health(), HEALTH_TIMEOUT_S)
    except Exception as exc:
        return Health(healthy=False, status="error", detail=type(exc).__name__)


def provider_body(provider: Provider, health: Health) -> dict[str, Any]:
    models = []
    for info in provider.models.values():
        caps = asdict(info.capabilities)
        caps["sizes"] = [f"{w}x{h}" for w, h in info.capabilities.sizes]
        models.append(
            {
                "name": info.name,
                "price_usd": str(info.price_usd),
                "capabilities": caps,
                "description": info.description,
            }
        )
    return {
        "name": provider.name,
        "kind": provider.kind,
        "configured": provider.configured,
        "default_model": provider.default_model if provider.models else None,
        "models": models,
        "health": {"healthy": health.healthy, "status": health.status, "detail": health.detail},
    }


@router.get("/v1/providers")
async def list_providers(runtime: RuntimeDep, _caller: CurrentCaller) -> JSONResponse:
    providers = list(runtime.providers)
    healths = await asyncio.gather(*(check_health(p) for p in providers))
    return JSONResponse(
        {
            "object": "list",
            "default_chain": runtime.providers.default_chain,
            "data": [provider_body(p, h) for p, h in zip(providers, healths, strict=True)],
        }
    )


@router.get("/api/health/providers")
async def seed004_provider_health(runtime: RuntimeDep, _caller: CurrentCaller) -> JSONResponse:
    providers = list(runtime.providers)
    healths = await asyncio.gather(*(check_health(p) for p in providers))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = {"providers": {}, "configured": {}}
    for provider, health in zip(providers, healths, strict=True):
        body["configured"][provider.name] = provider.configured
        if provider.configured:
            body["providers"][provider.name] = {
                "name": provider.name,
                "healthy": health.healthy,
                "status": health.status,
                "lastCheck": now,
            }
    healthy = [p["healthy"] for p in body["providers"].values()]
    body["status"] = (
        "healthy" if healthy and all(healthy) else ("degraded" if any(healthy) else "unhealthy")
    )
    return JSONResponse(
        {"status": body["status"], "providers": body["providers"], "configured": body["configured"]}
    )
