"""Seed 004 (Dream Pixel Generation API): ``/api/generate`` (async jobs) in its own shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from pixelgate.api.compat._common import drop_none
from pixelgate.api.deps import CurrentCaller, RequestId, RuntimeDep, visible_account
from pixelgate.api.errors import rate_limit_headers
from pixelgate.api.responses import JSONResponse
from pixelgate.api.schemas import iso
from pixelgate.core.bounds import FORMAT_PATTERN, MAX_N, MAX_SIDE, URL_PATTERN
from pixelgate.core.models import GenerationRequest, GenerationView, Status
from pixelgate.core.urls import refuse_unsafe_urls
from pixelgate.media.fetch import MAX_URL_LENGTH

router = APIRouter(prefix="/api", tags=["seed 004"])
#: seed 004's spelling of the request fields named in errors
FIELD_NAMES = {"reference_image_url": "referenceImageUrl"}

ESTIMATED_TIME = "20-40 seconds"


class Seed004Settings(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    width: int | None = Field(None, ge=16, le=MAX_SIDE)
    height: int | None = Field(None, ge=16, le=MAX_SIDE)
    guidance_scale: float | None = Field(None, ge=0, le=100)
    steps: int | None = Field(None, ge=1, le=1000)
    num_variations: int | None = Field(None, ge=1, le=MAX_N)
    format: str | None = Field(None, pattern=FORMAT_PATTERN)


class Seed004Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1)
    negativePrompt: str | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    referenceImageUrl: str | None = Field(None, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)
    settings: Seed004Settings = Field(default_factory=Seed004Settings)
    provider: str | None = None


def generation_004(view: GenerationView) -> dict[str, Any]:
    timings = view.timings()
    return {
        "id": view.id,
        "prompt": view.prompt,
        "status": view.status.value,
        "progress": view.progress,
        "resultImageUrl": view.images[0].url if view.images else None,
        "resultImageUrls": [i.url for i in view.images],
        "errorMessage": view.error_message,
        "processingTimeMs": timings["total_ms"]
        if view.terminal
        else int((datetime.now(UTC) - view.created_at).total_seconds() * 1000),
        "provider": view.provider,
        "retryCount": view.retry_count,
        "lastRetryAt": iso(view.last_retry_at),
        "createdAt": iso(view.created_at),
        "updatedAt": iso(view.updated_at),
        "completedAt": iso(view.completed_at),
    }


@router.post("/generate", status_code=202)
async def create(
    body: Seed004Request, runtime: RuntimeDep, caller: CurrentCaller, request_id: RequestId
) -> JSONResponse:
    s = body.settings
    options = drop_none(
        {"guidance_scale": s.guidance_scale, "steps": s.steps, **(s.model_extra or {})}
    )
    request = GenerationRequest.model_validate(
        drop_none(
            {
                "prompt": body.prompt,
                "negative_prompt": body.negativePrompt,
                "seed": body.seed,
                "reference_image_url": body.referenceImageUrl,
                "width": s.width,
                "height": s.height,
                "n": s.num_variations,
                "format": s.format,
                "provider": body.provider,
                "options": options,
            }
        )
    )
    refuse_unsafe_urls(request, runtime.settings, names=FIELD_NAMES)
    result = await runtime.pipeline.admit(caller, request, source="seed004", request_id=request_id)
    view = result.generation
    headers = {"Location": f"/api/generate/{view.id}"}
    if result.quota is not None:
        q = result.quota
        headers.update(rate_limit_headers(q.limit, q.remaining, q.reset_at.timestamp()))
    return JSONResponse(
        {
            "jobId": view.id,
            "status": view.status.value,
            "estimatedProcessingTime": ESTIMATED_TIME,
            "creditsUsed": view.credits,
            "creditsRemaining": result.credits_remaining,
            "createdAt": iso(view.created_at),
        },
        status_code=202,
        headers=headers,
    )


@router.get("/generate/{job_id}")
async def get(job_id: str, runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    view = await runtime.services.records.get_generation(job_id, account_id=visible_account(caller))
    return JSONResponse({"generation": generation_004(view)})


@router.get("/generate")
async def list_(
    runtime: RuntimeDep,
    caller: CurrentCaller,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    views = await runtime.services.records.list_generations(
        account_id=visible_account(caller), status=status, limit=limit, cursor=cursor
    )
    return JSONResponse({"generations": [generation_004(v) for v in views]})
