"""The caller's money and quotas: ``POST /v1/estimate``, ``GET /v1/account``, ``GET /v1/usage``."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query

from pixelgate.api.deps import CurrentCaller, RuntimeDep
from pixelgate.api.responses import JSONResponse
from pixelgate.api.schemas import iso
from pixelgate.core.calendar import utc_midnight
from pixelgate.core.models import AccountView, GenerationRequest
from pixelgate.money import format_usd
from pixelgate.runtime import Runtime

router = APIRouter(tags=["account"])
MAX_USAGE_DAYS = 366


async def account_body(runtime: Runtime, account: AccountView) -> dict[str, Any]:
    """Balance, tier, limits left and today's budget of one account."""
    summary = await runtime.services.account_summary(account)
    now, tier, quota, spent = summary.now, summary.tier, summary.quota, summary.spent_today_usd
    budget = None
    if account.daily_budget_usd is not None:
        budget = {
            "daily_usd": format_usd(account.daily_budget_usd),
            "spent_today_usd": format_usd(spent),
            "remaining_usd": format_usd(max(account.daily_budget_usd - spent, Decimal(0))),
            "resets_at": iso(utc_midnight(now) + timedelta(days=1)),
        }
    return {
        "id": account.id,
        "name": account.name,
        "tier": account.tier,
        "credits": account.credits,
        "metered": account.credits is not None,
        "credit_policy": account.credit_policy,
        "limits": {
            "generations": None
            if quota is None
            else {
                "limit": quota.limit,
                "remaining": quota.remaining,
                "window_s": quota.window_s,
                "reset_at": iso(quota.reset_at),
            },
            "requests_per_minute": tier.requests_per_minute,
        },
        "budget": budget,
        "spent_today_usd": format_usd(spent),
        "preferred_providers": account.preferred_providers,
        "projects": summary.projects,
        "email": account.email,
        "webhook_url": account.webhook_url,
        "created_at": iso(account.created_at),
    }


@router.post("/v1/estimate")
async def estimate(
    body: GenerationRequest, runtime: RuntimeDep, caller: CurrentCaller
) -> JSONResponse:
    request = await runtime.pipeline.prepare(caller, body)
    account = await runtime.services.records.get_account(caller.account_id)
    result = await runtime.pipeline.estimate(request, account)
    return JSONResponse(
        {
            "credits": result.credits,
            "usd": format_usd(result.usd),
            "provider": result.provider,
            "model": result.model,
            "candidates": result.candidates,
            "balance": account.credits,
            "affordable": account.credits is None or account.credits >= result.credits,
        }
    )


@router.get("/v1/account")
async def get_account(runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    account = await runtime.services.records.get_account(caller.account_id)
    return JSONResponse(await account_body(runtime, account))


@router.get("/v1/account/ledger")
async def get_ledger(
    runtime: RuntimeDep,
    caller: CurrentCaller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    balance, entries = await runtime.services.ledger(caller.account_id, limit=limit)
    for entry in entries:
        entry["created_at"] = iso(entry["created_at"])
    return JSONResponse({"balance": balance, "entries": entries})


@router.get("/v1/usage")
async def get_usage(
    runtime: RuntimeDep,
    caller: CurrentCaller,
    days: Annotated[int, Query(ge=1, le=MAX_USAGE_DAYS)] = 30,
) -> JSONResponse:
    first, last, rows = await runtime.services.usage(caller.account_id, days)
    return JSONResponse({"from": first.isoformat(), "to": last.isoformat(), "data": rows})
