"""Routing and resilience over HTTP: seed 001's admin routes and the hot configuration.

- ``GET|PUT /admin/config`` — hot configuration of routing, retries, breakers and limits
  (validated, versioned, applied to the next job without a restart);
- ``GET|POST /admin/circuit-breaker`` — breaker states; ``reset`` / ``reset-all``;
- ``GET /admin/providers`` — health, breaker, recent success rate and latency, limits;
- ``GET /admin/status`` — the whole picture, with configuration problems;
- ``GET|PUT /admin/accounts/{name}/routing`` — an account's own routing choices.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from pydantic import ConfigDict, ValidationError

from pixelgate import __version__
from pixelgate.api.deps import AdminCaller, RuntimeDep
from pixelgate.api.errors import error_response
from pixelgate.api.responses import JSONResponse
from pixelgate.api.routes.health import STARTED_AT, health
from pixelgate.api.routes.providers import check_health, provider_healths
from pixelgate.core.routing import AccountRouting
from pixelgate.errors import NotFound, ValidationFailed
from pixelgate.providers.base import Health
from pixelgate.resilience.breaker import BreakerState
from pixelgate.runtime import Runtime

router = APIRouter(tags=["admin"])

RESET_ACTIONS = ("reset", "reset-all")
MAX_HISTORY = 100


class AccountRoutingUpdate(AccountRouting):
    model_config = ConfigDict(extra="forbid")


def _bad_request(request: Request, field: str, message: str) -> JSONResponse:
    return error_response(request, 400, "invalid_request", f"{field}: {message}", field=field)


# Hot configuration ---------------------------------------------------------------------


@router.get("/admin/config")
async def get_config(
    runtime: RuntimeDep,
    _admin: AdminCaller,
    history: Annotated[int, Query(ge=0, le=MAX_HISTORY)] = 0,
) -> JSONResponse:
    control = runtime.pipeline.control
    await control.refresh(force=True)
    body = control.public()
    if history:
        versions = await runtime.services.records.config_versions(history)
        body["history"] = [
            {
                "version": v["version"],
                "actor": v["actor"],
                "created_at": v["created_at"].isoformat().replace("+00:00", "Z"),
                "data": v["data"],
            }
            for v in versions
        ]
    return JSONResponse(body)


@router.put("/admin/config")
async def put_config(
    runtime: RuntimeDep,
    admin: AdminCaller,
    document: Annotated[dict[str, Any], Body()],
    if_match: Annotated[
        str | None, Header(pattern=r'^(W/)?"?[0-9]{1,18}"?$', description="a config version")
    ] = None,
) -> JSONResponse:
    """Replace the hot configuration; it applies to the next job. ``If-Match: <version>``
    guards against overwriting a change made meanwhile (409)."""
    control = runtime.pipeline.control
    routing = control.validate(document)
    expected: int | None = None
    if if_match is not None:
        raw = if_match.strip().strip('"').removeprefix("W/").strip('"')
        if not raw.isdigit():
            raise ValidationFailed("If-Match", "must be a configuration version number")
        expected = int(raw)
    record = await runtime.services.records.save_config(
        document, actor=admin.account_name, expected_version=expected
    )
    control.apply(
        routing,
        version=record["version"],
        overrides=document,
        actor=record["actor"],
        updated_at=record["created_at"],
    )
    return JSONResponse(control.public(), headers={"ETag": f'"{record["version"]}"'})


# Circuit breakers ------------------------------------------------------------------------


async def _breakers(runtime: Runtime) -> dict[str, Any]:
    control = runtime.pipeline.control
    names = runtime.providers.names()
    snaps = await control.breakers.snapshots(names)
    return {name: snaps[name].as_dict() for name in names}


@router.get("/admin/circuit-breaker")
async def get_breakers(runtime: RuntimeDep, _admin: AdminCaller) -> JSONResponse:
    control = runtime.pipeline.control
    await control.refresh()
    return JSONResponse(
        {
            "breakers": await _breakers(runtime),
            "settings": control.routing.breaker.model_dump(mode="json"),
        }
    )


_RESET_BODY = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": list(RESET_ACTIONS)},
        "provider": {"type": "string", "description": "required for action reset"},
    },
    "required": ["action"],
}


@router.post(
    "/admin/circuit-breaker",
    responses={400: {"description": "Unknown action or provider (seed 001 answers 400)"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _RESET_BODY}},
        }
    },
)
async def reset_breakers(
    request: Request,
    runtime: RuntimeDep,
    admin: AdminCaller,
    body: Annotated[dict[str, Any], Body()],
) -> JSONResponse:
    """``{"action": "reset", "provider": name}`` or ``{"action": "reset-all"}``."""
    action = body.get("action")
    if action not in RESET_ACTIONS:
        return _bad_request(request, "action", f"must be one of {', '.join(RESET_ACTIONS)}")
    breakers = runtime.pipeline.control.breakers
    if action == "reset":
        name = body.get("provider")
        if not isinstance(name, str) or not name:
            return _bad_request(request, "provider", "field required for action reset")
        if name not in runtime.providers:
            return _bad_request(request, "provider", f"unknown provider {name!r}")
        names = [name]
    else:
        names = runtime.providers.names()
    reset: list[str] = []
    for name in names:
        if await breakers.reset(name):
            reset.append(name)
    return JSONResponse(
        {
            "success": True,
            "action": action,
            "reset": reset,
            "actor": admin.account_name,
            "breakers": await _breakers(runtime),
        }
    )


# Providers and status --------------------------------------------------------------------


async def _health(runtime: Runtime, check: bool) -> dict[str, Health]:
    providers = list(runtime.providers)
    if not check:
        return {p.name: Health(healthy=p.configured, status="unchecked") for p in providers}
    found = await asyncio.gather(
        *(check_health(p) if p.configured else _not_configured() for p in providers)
    )
    return {p.name: h for p, h in zip(providers, found, strict=True)}


async def _not_configured() -> Health:
    return Health(healthy=False, status="not_configured")


@router.get("/admin/providers")
async def admin_providers(
    runtime: RuntimeDep, _admin: AdminCaller, check: bool = True
) -> JSONResponse:
    """Every provider: health, breaker state, recent success rate and latency, limits."""
    control = runtime.pipeline.control
    await control.refresh()
    chain = control.chain()
    healths = await _health(runtime, check)
    breakers = await _breakers(runtime)
    body: dict[str, Any] = {}
    for provider in runtime.providers:
        name = provider.name
        health_ = healths[name]
        body[name] = {
            "name": name,
            "kind": provider.kind,
            "configured": provider.configured,
            "enabled": control.enabled(name),
            "in_chain": name in chain,
            "priority": control.priority(name),
            "timeout_s": control.timeout_for(name),
            "health": {
                "healthy": health_.healthy,
                "status": health_.status,
                "detail": health_.detail,
                "latency_ms": health_.latency_ms,
            },
            "circuit_breaker": breakers[name],
            "recent": control.stats.summary(name).as_dict(),
            "limits": await control.outbound.usage(name),
        }
    return JSONResponse({"providers": body, "chain": chain, "config_version": control.version})


@router.get("/admin/status")
async def admin_status(runtime: RuntimeDep, _admin: AdminCaller) -> JSONResponse:
    """Service status: infrastructure checks, providers and configuration problems."""
    control = runtime.pipeline.control
    await control.refresh()
    infra = json.loads(bytes((await health(runtime)).body))
    chain = control.chain()
    breakers = await _breakers(runtime)
    # each provider's own check, its breaker and its recent outcomes, as /v1/providers says
    configured_providers = runtime.providers.configured()
    observed = await provider_healths(runtime, configured_providers)
    healthy = [p.name for p, h in zip(configured_providers, observed, strict=True) if h.healthy]
    problems: list[str] = []
    usable: list[str] = []
    for name in chain:
        provider = runtime.providers.find(name)
        if provider is None or not provider.configured:
            problems.append(f"routing.default: {name!r} is not configured")
        elif not control.enabled(name):
            problems.append(f"routing.default: {name!r} is disabled")
        elif breakers[name]["state"] == BreakerState.OPEN.value:
            problems.append(f"{name}: circuit breaker open")
        else:
            usable.append(name)
    if not usable:
        problems.append("no provider of the fallback chain can take a job now")
    open_breakers = [n for n, b in breakers.items() if b["state"] != BreakerState.CLOSED.value]
    configured = [p.name for p in runtime.providers.configured()]
    if infra["status"] != "healthy" or not usable:
        status = "unhealthy"
    elif problems or open_breakers:
        status = "degraded"
    else:
        status = "healthy"
    worker = runtime.worker
    return JSONResponse(
        {
            "status": status,
            "service": "image-gen",
            "version": __version__,
            "uptime_s": round(time.monotonic() - STARTED_AT, 1),
            "checks": infra["checks"],
            "config": {
                "version": control.version,
                "valid": not problems,
                "problems": problems,
                "chain": chain,
                "fallback_image": control.routing.fallback_image,
            },
            "providers": {
                "configured": configured,
                "healthy": healthy,
                "usable": usable,
                "open_breakers": open_breakers,
            },
            "queue": {
                "worker": "running" if worker else "disabled",
                "in_flight": worker.in_flight if worker else 0,
            },
        }
    )


# Accounts' own routing --------------------------------------------------------------------


@router.get("/admin/accounts/{name}/routing")
async def get_account_routing(name: str, runtime: RuntimeDep, _admin: AdminCaller) -> JSONResponse:
    account = await runtime.services.records.find_account(name)
    if account is None:
        raise NotFound(f"account {name!r} not found", code="account_not_found")
    _, routing = await runtime.services.records.account_routing(account.id)
    return JSONResponse({"account": name, "routing": routing})


@router.put("/admin/accounts/{name}/routing")
async def put_account_routing(
    name: str,
    runtime: RuntimeDep,
    _admin: AdminCaller,
    body: Annotated[dict[str, Any], Body()],
) -> JSONResponse:
    """Set an account's routing choices (preferred providers, policy, fallback image,
    refusal fallback, cost cap, racing, hedging, its own outbound limits)."""
    account = await runtime.services.records.find_account(name)
    if account is None:
        raise NotFound(f"account {name!r} not found", code="account_not_found")
    try:
        routing = AccountRoutingUpdate.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationFailed(where, str(first["msg"])) from None
    for field, names in (("preferred", routing.preferred), ("outbound", routing.outbound)):
        for provider in names:
            if provider not in runtime.providers:
                raise ValidationFailed(
                    field, f"unknown provider {provider!r}", code="unknown_provider"
                )
    stored = routing.model_dump(mode="json", exclude_defaults=True)
    await runtime.services.records.set_account_routing(account.id, stored or None)
    return JSONResponse({"account": name, "routing": stored})
