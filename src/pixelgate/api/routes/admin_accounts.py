"""Admin routes for accounts, credits and keys, and seed 001's ``/admin/stats``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from pixelgate.api.deps import AdminCaller, RuntimeDep
from pixelgate.api.responses import JSONResponse
from pixelgate.api.routes.account import account_body
from pixelgate.api.schemas import iso
from pixelgate.core.bounds import MAX_CREDITS, MAX_USD
from pixelgate.core.webhooks import check_webhook_url
from pixelgate.errors import NotFound, ValidationFailed
from pixelgate.runtime import Runtime

router = APIRouter(prefix="/admin", tags=["admin"])
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    tier: str = Field("FREE", max_length=64)
    credits: StrictInt | None = Field(None, ge=0, le=MAX_CREDITS)
    credit_policy: Literal["refund", "keep"] | None = None
    email: str | None = None


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: str | None = None
    daily_budget_usd: Decimal | None = Field(None, ge=0, le=MAX_USD)
    clear_daily_budget: StrictBool = False
    preferred_providers: list[str] | None = None
    credit_policy: Literal["refund", "keep"] | None = None
    email: str | None = None
    webhook_url: str | None = None
    disabled: StrictBool | None = None


class CreditChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credits: StrictInt = Field(
        ge=-MAX_CREDITS,
        le=MAX_CREDITS,
        description="positive grants, negative revokes (never 0)",
        json_schema_extra={"not": {"const": 0}},
    )
    reason: str = Field(min_length=1, max_length=500)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    admin: StrictBool = False
    name: str | None = Field(None, max_length=64)


CLEARABLE = frozenset({"email", "webhook_url"})
async def _check_webhook_url(runtime: Runtime, url: str) -> None:
    await check_webhook_url(
        runtime.pipeline.fetcher,
        url,
        allow_hosts=runtime.settings.webhook_allow_hosts,
        field="webhook_url",
    )


async def _account(runtime: Runtime, name: str) -> Any:
    account = await runtime.services.records.find_account(name)
    if account is None:
        raise NotFound(f"account {name!r} not found", code="account_not_found")
    return account


def _check_tier(runtime: Runtime, tier: str) -> str:
    if tier.upper() not in runtime.settings.tiers:
        known = ", ".join(sorted(runtime.settings.tiers))
        raise ValidationFailed("tier", f"unknown tier {tier!r} (known: {known})")
    return tier.upper()


@router.post("/accounts", status_code=201)
async def create_account(
    body: AccountCreate, runtime: RuntimeDep, admin: AdminCaller
) -> JSONResponse:
    account = await runtime.services.records.create_account(
        body.name,
        tier=_check_tier(runtime, body.tier),
        credits=body.credits,
        actor=admin.account_name,
        credit_policy=body.credit_policy or runtime.settings.credits.default_policy,
        email=body.email,
    )
    return JSONResponse(await account_body(runtime, account), status_code=201)


@router.get("/accounts")
async def list_accounts(runtime: RuntimeDep, _admin: AdminCaller) -> JSONResponse:
    accounts = await runtime.services.records.list_accounts()
    return JSONResponse(
        {
            "data": [
                {
                    "id": a.id,
                    "name": a.name,
                    "tier": a.tier,
                    "credits": a.credits,
                    "created_at": iso(a.created_at),
                    "disabled": a.disabled,
                }
                for a in accounts
            ]
        }
    )


@router.get("/accounts/{name}")
async def get_account(name: str, runtime: RuntimeDep, _admin: AdminCaller) -> JSONResponse:
    return JSONResponse(await account_body(runtime, await _account(runtime, name)))


@router.patch("/accounts/{name}")
async def update_account(
    name: str, body: AccountUpdate, request: Request, runtime: RuntimeDep, _admin: AdminCaller
) -> JSONResponse:
    account = await _account(runtime, name)
    fields = body.model_dump(exclude_unset=True, exclude={"clear_daily_budget"})
    # an explicit null clears the e-mail or webhook URL; elsewhere null means "unchanged"
    fields = {k: v for k, v in fields.items() if v is not None or k in CLEARABLE}
    if fields.get("webhook_url"):
        await _check_webhook_url(runtime, fields["webhook_url"])
    if "tier" in fields:
        fields["tier"] = _check_tier(runtime, fields["tier"])
    for provider in fields.get("preferred_providers", []):
        if provider not in runtime.providers:
            raise ValidationFailed("preferred_providers", f"unknown provider {provider!r}")
    if body.clear_daily_budget:
        fields["daily_budget_usd"] = None
    updated = await runtime.services.records.update_account(account.id, **fields)
    if "disabled" in fields:
        request.app.state.key_cache.clear()  # this process at once; others within the TTL
    return JSONResponse(await account_body(runtime, updated))


@router.post("/accounts/{name}/credits")
async def change_credits(
    name: str, body: CreditChange, runtime: RuntimeDep, admin: AdminCaller
) -> JSONResponse:
    account = await _account(runtime, name)
    balance = await runtime.services.records.grant_credits(
        account.id, body.credits, reason=body.reason, actor=admin.account_name
    )
    return JSONResponse({"account": account.name, "credits": balance})


@router.post("/accounts/{name}/keys", status_code=201)
async def create_key(
    name: str, body: KeyCreate, runtime: RuntimeDep, _admin: AdminCaller
) -> JSONResponse:
    account = await _account(runtime, name)
    key_id, plain = await runtime.services.records.create_key(
        account.id, is_admin=body.admin, name=body.name
    )
    return JSONResponse(
        {
            "id": key_id,
            "account": account.name,
            "admin": body.admin,
            "key": plain,
            "note": "shown once; only its hash is stored",
        },
        status_code=201,
    )


@router.get("/keys")
async def list_keys(runtime: RuntimeDep, _admin: AdminCaller) -> JSONResponse:
    keys = await runtime.services.records.list_keys()
    return JSONResponse(
        {
            "data": [
                {
                    **k,
                    "prefix": k["prefix"] + "…",
                    "created_at": iso(k["created_at"]),
                    "revoked_at": iso(k["revoked_at"]),
                }
                for k in keys
            ]
        }
    )


@router.delete("/keys/{key_id}")
async def revoke_key(
    key_id: str, request: Request, runtime: RuntimeDep, _admin: AdminCaller
) -> JSONResponse:
    key_hash = await runtime.services.records.revoke_key(key_id)
    request.app.state.key_cache.drop(key_hash)  # this process at once; others within the TTL
    return JSONResponse({"id": key_id, "revoked": True})
