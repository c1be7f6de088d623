"""The caller's webhook: its URL, its signing secret, and the record of deliveries."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from pixelgate.api.deps import CurrentCaller, RuntimeDep, visible_account
from pixelgate.api.responses import JSONResponse
from pixelgate.api.schemas import iso
from pixelgate.core.bounds import URL_PATTERN
from pixelgate.core.records import WebhookDeliveryView
from pixelgate.core.webhooks import SIGNATURE_HEADER, account_secret, check_webhook_url
from pixelgate.media.fetch import MAX_URL_LENGTH

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

MAX_PAGE = 100
CHECK_TIMEOUT_S = 5.0
SIGNATURE_SCHEME = "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, '<t>.<raw body>')>"


class WebhookSetting(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)


@router.get("")
async def get_webhook(runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    account = await runtime.services.records.get_account(caller.account_id)
    return JSONResponse(_setting_body(account.webhook_url))


@router.put("")
async def set_webhook(
    body: WebhookSetting, runtime: RuntimeDep, caller: CurrentCaller
) -> JSONResponse:
    """Set (or, with ``null``, clear) the account's default webhook URL."""
    if body.url:
        await check_webhook_url(
            runtime.pipeline.fetcher,
            body.url,
            allow_hosts=runtime.settings.webhook_allow_hosts,
            field="url",
        )
    account = await runtime.services.records.update_account(
        caller.account_id, webhook_url=body.url or None
    )
    return JSONResponse(_setting_body(account.webhook_url))


@router.get("/secret")
async def get_secret(runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    """The caller's signing secret (each account has its own)."""
    secret = await asyncio.to_thread(account_secret, runtime.settings, caller.account_id)
    return JSONResponse(
        {"secret": secret, "header": SIGNATURE_HEADER, "scheme": SIGNATURE_SCHEME},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/deliveries")
async def list_deliveries(
    runtime: RuntimeDep,
    caller: CurrentCaller,
    generation_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> JSONResponse:
    rows = await runtime.services.records.list_webhook_deliveries(
        account_id=visible_account(caller), generation_id=generation_id, limit=limit
    )
    return JSONResponse({"object": "list", "data": [_delivery_body(r) for r in rows]})


def _setting_body(url: str | None) -> dict[str, Any]:
    return {"url": url, "signature_header": SIGNATURE_HEADER, "scheme": SIGNATURE_SCHEME}


def _delivery_body(row: WebhookDeliveryView) -> dict[str, Any]:
    return {
        "id": row.id,
        "generation_id": row.generation_id,
        "event": row.event,
        "url": row.url,
        "status": row.status,
        "attempts": row.attempts,
        "response_status": row.response_status,
        "error": row.error,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "delivered_at": iso(row.delivered_at),
    }
