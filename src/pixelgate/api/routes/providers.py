"""Provider catalog: ``GET /v1/providers`` and seed 004's ``GET /api/health/providers``."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from pixelgate.api.deps import CurrentCaller, RuntimeDep
from pixelgate.api.responses import JSONResponse
from pixelgate.providers.base import Health, Provider
from pixelgate.resilience.breaker import BreakerSnapshot, BreakerState
from pixelgate.resilience.stats import ProviderStats
from pixelgate.runtime import Runtime

router = APIRouter(tags=["providers"])
HEALTH_TIMEOUT_S = 5.0
#: recent attempts needed before their success rate decides a provider's health
MIN_RECENT_ATTEMPTS = 3
#: below this recent success rate a provider is "failing" (unhealthy)
FAILING_RATE = 0.5
#: below this one it is "degraded" (still healthy: it is chosen, with fallbacks behind it)
DEGRADED_RATE = 0.9


async def check_health(provider: Provider) -> Health:
    try:
        return await asyncio.wait_for(provider.health(), HEALTH_TIMEOUT_S)
    except Exception as exc:
        return Health(healthy=False, status="error", detail=type(exc).__name__)


def observed_health(health: Health, breaker: BreakerSnapshot, recent: ProviderStats) -> Health:
    """A provider's health as it really is: its own check, then its circuit breaker, then
    the success rate of its recent attempts (a provider failing every call is not
    "operational" because its key is set)."""
    if not health.healthy:
        return health
    if breaker.state == BreakerState.OPEN:
        return Health(False, "circuit_open", breaker.last_failure, health.latency_ms)
    if breaker.state == BreakerState.HALF_OPEN:
        return Health(False, "recovering", breaker.last_failure, health.latency_ms)
    if recent.attempts >= MIN_RECENT_ATTEMPTS and recent.success_rate is not None:
        detail = (
            f"{recent.succeeded} of {recent.attempts} recent attempts succeeded"
            + (f"; last error: {recent.last_error}" if recent.last_error else "")
        )
        if recent.success_rate < FAILING_RATE:
            return Health(False, "failing", detail, health.latency_ms)
        if recent.success_rate < DEGRADED_RATE:
            return Health(True, "degraded", detail, health.latency_ms)
    return health


async def provider_healths(runtime: Runtime, providers: list[Provider]) -> list[Health]:
    """Each provider's :func:`observed_health` (configuration, breaker, recent outcomes)."""
    control = runtime.pipeline.control
    checks = await asyncio.gather(*(check_health(p) for p in providers))
    breakers = await control.breakers.snapshots([p.name for p in providers])
    return [
        observed_health(h, breakers[p.name], control.stats.summary(p.name))
        for p, h in zip(providers, checks, strict=True)
    ]


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
    healths = await provider_healths(runtime, providers)
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
    healths = await provider_healths(runtime, providers)
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
                **({"detail": health.detail} if health.detail else {}),
            }
    healthy = [p["healthy"] for p in body["providers"].values()]
    body["status"] = (
        "healthy" if healthy and all(healthy) else ("degraded" if any(healthy) else "unhealthy")
    )
    return JSONResponse(
        {"status": body["status"], "providers": body["providers"], "configured": body["configured"]}
    )
