"""Native generation routes: create (async, or waiting with ``Prefer: wait=N``), read, list,
cancel and the SSE event stream."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette.sse import EventSourceResponse

from pixelgate.api.deps import (
    CurrentCaller,
    IdempotencyKey,
    RequestId,
    RuntimeDep,
    visible_account,
)
from pixelgate.api.errors import rate_limit_headers
from pixelgate.api.hot import HotRequest, Unusual, hot_route
from pixelgate.api.responses import JSONResponse
from pixelgate.api.schemas import generation_body, iso
from pixelgate.core.event_stream import follow_events
from pixelgate.core.models import ENTITY_TYPE_PATTERN, GenerationRequest, Status
from pixelgate.core.pipeline import Caller
from pixelgate.core.urls import refuse_unsafe_urls
from pixelgate.errors import ValidationFailed
from pixelgate.runtime import Runtime

router = APIRouter(prefix="/v1/generations", tags=["generations"])

_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*(\d+(?:\.\d+)?)")
SSE_WAIT_S = 15.0
MAX_PAGE = 100


def prefer_wait(header: str | None, cap: float) -> float | None:
    """Seconds from ``Prefer: wait=N`` (RFC 7240), capped; None when absent."""
    if not header:
        return None
    match = _PREFER_WAIT.search(header)
    if not match:
        return None
    return min(float(match[1]), cap)


async def create_generation(
    body: GenerationRequest,
    runtime: RuntimeDep,
    caller: CurrentCaller,
    request_id: RequestId,
    idempotency_key: IdempotencyKey,
    prefer: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    return await _create(runtime, caller, body, request_id, idempotency_key, prefer)


async def create_generation_fast(request: HotRequest) -> JSONResponse:
    """``create_generation`` for the usual request (see ``api/hot.py``)."""
    try:
        raw = json.loads(request.body)
        if not isinstance(raw, dict):
            raise Unusual
        body = GenerationRequest.model_validate(raw)
    except ValueError:  # malformed JSON or a failed validation: FastAPI's 422 answers it
        raise Unusual from None
    return await _create(
        request.runtime,
        request.caller,
        body,
        request.request_id,
        request.idempotency_key,
        request.header(b"prefer"),
    )


async def _create(
    runtime: Runtime,
    caller: Caller,
    body: GenerationRequest,
    request_id: str,
    idempotency_key: str | None,
    prefer: str | None,
) -> JSONResponse:
    refuse_unsafe_urls(body, runtime.settings)
    result = await runtime.pipeline.admit(
        caller, body, source="native", idempotency_key=idempotency_key, request_id=request_id
    )
    view = result.generation
    wait_s = prefer_wait(prefer, runtime.settings.max_wait_s)
    if wait_s and not view.terminal:
        view = await runtime.pipeline.wait(view.id, wait_s)
    headers = {"Location": f"/v1/generations/{view.id}"}
    if result.quota is not None:
        q = result.quota
        headers.update(rate_limit_headers(q.limit, q.remaining, q.reset_at.timestamp()))
    if not result.created:
        headers["Idempotent-Replayed"] = "true"
    if wait_s is not None:
        headers["Preference-Applied"] = f"wait={wait_s:g}"
    # a cache hit is finished at admission: 200, as for a replay or a wait
    done_now = wait_s is not None or not result.created or view.cached_from is not None
    status = 200 if view.terminal and done_now else 202
    return JSONResponse(generation_body(view), status_code=status, headers=headers)


router.add_api_route(
    "",
    create_generation,
    methods=["POST"],
    status_code=202,
    route_class_override=hot_route(create_generation_fast, reads=("prefer",)),
)


@router.get("")
async def list_generations(
    runtime: RuntimeDep,
    caller: CurrentCaller,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    batch_id: Annotated[str | None, Query(max_length=64)] = None,
    entity_type: Annotated[str | None, Query(pattern=ENTITY_TYPE_PATTERN)] = None,
    entity_id: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> JSONResponse:
    if entity_id is not None and entity_type is None:
        raise ValidationFailed("entity_type", "required together with entity_id")
    views = await runtime.services.records.list_generations(
        account_id=visible_account(caller),
        status=status,
        limit=limit + 1,
        cursor=cursor,
        batch_id=batch_id,
        entity=(entity_type, entity_id) if entity_type else None,
    )
    has_more = len(views) > limit
    views = views[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": [generation_body(v) for v in views],
            "has_more": has_more,
            "next_cursor": views[-1].id if has_more and views else None,
        }
    )


@router.get("/{generation_id}")
async def get_generation(
    generation_id: str, runtime: RuntimeDep, caller: CurrentCaller
) -> JSONResponse:
    view = await runtime.services.records.get_generation(
        generation_id, account_id=visible_account(caller)
    )
    return JSONResponse(generation_body(view))


@router.delete("/{generation_id}")
async def cancel_generation(
    generation_id: str, runtime: RuntimeDep, caller: CurrentCaller
) -> JSONResponse:
    view = await runtime.pipeline.cancel(generation_id, visible_account(caller))
    return JSONResponse(generation_body(view), status_code=200 if view.terminal else 202)


def _last_event_id(request: Request, query_value: str | None) -> int:
    raw = request.headers.get("last-event-id") or query_value or "0"
    if not raw.isdigit():
        raise ValidationFailed("Last-Event-ID", "must be an event id (a non-negative integer)")
    return int(raw)


@router.get("/{generation_id}/events")
async def stream_events(
    generation_id: str,
    request: Request,
    runtime: RuntimeDep,
    caller: CurrentCaller,
    last_event_id: Annotated[str | None, Query(max_length=20)] = None,
) -> EventSourceResponse:
    await runtime.services.records.get_generation(generation_id, account_id=visible_account(caller))
    after = _last_event_id(request, last_event_id)

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for event in follow_events(
            runtime.services.records,
            runtime.bus,
            generation_id,
            after=after,
            poll_s=SSE_WAIT_S,
            stop=request.is_disconnected,
        ):
            data = {
                "generation_id": generation_id,
                "type": event.type,
                "created_at": iso(event.created_at),
                **event.data,
            }
            yield {"id": str(event.id), "event": event.type, "data": json.dumps(data)}

    return EventSourceResponse(events(), ping=SSE_WAIT_S)
