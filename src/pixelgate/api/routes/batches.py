"""Batches: many generations admitted at once (all or none), run with bounded concurrency."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from pixelgate.api.deps import (
    CurrentCaller,
    IdempotencyKey,
    RequestId,
    RuntimeDep,
    visible_account,
)
from pixelgate.api.responses import JSONResponse
from pixelgate.api.schemas import iso
from pixelgate.core.bounds import BoundedJson
from pixelgate.core.models import GenerationRequest
from pixelgate.core.records import BatchView
from pixelgate.core.urls import refuse_unsafe_urls

router = APIRouter(prefix="/v1/batches", tags=["batches"])

MAX_PAGE = 100
MAX_CONCURRENCY = 1000
MAX_REQUESTS = 10_000


class BatchRequest(BaseModel):
    """``POST /v1/batches``: the requests, and how many of them may run at once."""

    model_config = ConfigDict(extra="forbid")

    #: at most ``max_batch_size`` (checked at admission; this bounds the body's parsing)
    requests: list[GenerationRequest] = Field(min_length=1, max_length=MAX_REQUESTS)
    #: members PROCESSING at once at most (default: no bound beyond the workers')
    concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY)
    metadata: BoundedJson = Field(default_factory=dict)


def batch_body(batch: BatchView) -> dict[str, Any]:
    return {
        "id": batch.id,
        "object": "batch",
        "status": batch.status,
        "concurrency": batch.concurrency,
        "size": batch.size,
        "counts": batch.counts,
        "generation_ids": batch.generation_ids,
        "cost": {"credits": batch.credits},
        "metadata": batch.metadata,
        "created_at": iso(batch.created_at),
        "canceled_at": iso(batch.canceled_at),
        "completed_at": iso(batch.completed_at),
        "request_id": batch.request_id,
    }


@router.post("", status_code=202)
async def create_batch(
    body: BatchRequest,
    runtime: RuntimeDep,
    caller: CurrentCaller,
    request_id: RequestId,
    idempotency_key: IdempotencyKey,
) -> JSONResponse:
    for index, member in enumerate(body.requests):
        refuse_unsafe_urls(member, runtime.settings, prefix=f"requests[{index}].")
    batch = await runtime.pipeline.admit_batch(
        caller,
        body.requests,
        concurrency=body.concurrency,
        metadata=body.metadata,
        request_id=request_id,
        idempotency_key=idempotency_key,
    )
    headers = {"Location": f"/v1/batches/{batch.id}"}
    if batch.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(
        batch_body(batch), status_code=200 if batch.replayed else 202, headers=headers
    )


@router.get("")
async def list_batches(
    runtime: RuntimeDep,
    caller: CurrentCaller,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    batches = await runtime.services.records.list_batches(
        account_id=visible_account(caller), limit=limit + 1, cursor=cursor
    )
    has_more = len(batches) > limit
    batches = batches[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": [batch_body(b) for b in batches],
            "has_more": has_more,
            "next_cursor": batches[-1].id if has_more and batches else None,
        }
    )


@router.get("/{batch_id}")
async def get_batch(batch_id: str, runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    batch = await runtime.services.records.get_batch(batch_id, account_id=visible_account(caller))
    return JSONResponse(batch_body(batch))


@router.delete("/{batch_id}")
async def cancel_batch(batch_id: str, runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    batch = await runtime.pipeline.cancel_batch(batch_id, visible_account(caller))
    running = batch.counts["PENDING"] + batch.counts["PROCESSING"]
    return JSONResponse(batch_body(batch), status_code=202 if running else 200)
