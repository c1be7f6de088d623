"""Seed 000 (Image Generation Worker): synchronous ``POST /generate``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from pixelgate.api.compat._common import drop_none, resolve_instance, route_for_model
from pixelgate.api.deps import CurrentCaller, RequestId, RuntimeDep
from pixelgate.api.errors import CODE_STATUS, error_body
from pixelgate.api.responses import JSONResponse
from pixelgate.api.schemas import iso
from pixelgate.core.bounds import FORMAT_PATTERN, MAX_N, MAX_SIDE, MAX_TEXT_LENGTH
from pixelgate.core.models import MIN_SIDE, GenerationRequest, Status

router = APIRouter(tags=["seed 000"])


class Seed000Options(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    aspect_ratio: str | None = None
    style: str | None = None
    width: int | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE)
    height: int | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE)
    negative_prompt: str | None = Field(None, max_length=MAX_TEXT_LENGTH)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    format: str | None = Field(None, pattern=FORMAT_PATTERN)
    n: int | None = Field(None, ge=1, le=MAX_N)


class Seed000Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1)
    model: str | None = None
    provider: str | None = None
    instance_id: str | None = None
    project_id: str | None = None
    options: Seed000Options = Field(default_factory=Seed000Options)


@router.post("/generate")
async def generate(
    body: Seed000Request, runtime: RuntimeDep, caller: CurrentCaller, request_id: RequestId
) -> JSONResponse:
    instance = body.instance_id or None
    account = await resolve_instance(runtime, caller, instance)
    route = route_for_model(runtime, None if body.provider else body.model)
    provider, model = (
        (body.provider, body.model) if body.provider else (route.provider, route.model)
    )
    opts = body.options
    extra: dict[str, Any] = dict(opts.model_extra or {})
    request = GenerationRequest.model_validate(
        drop_none(
            {
                "prompt": body.prompt,
                "provider": provider,
                "model": model,
                "project": body.project_id or "default",
                "aspect_ratio": opts.aspect_ratio,
                "style": opts.style,
                "width": opts.width,
                "height": opts.height,
                "negative_prompt": opts.negative_prompt,
                "seed": opts.seed,
                "format": opts.format,
                "n": opts.n,
                "options": extra,
                "metadata": drop_none(
                    {
                        "instance_id": instance,
                        "project_id": body.project_id,
                        "requested_model": body.model,
                        "substituted": route.substituted,
                    }
                ),
            }
        )
    )
    result = await runtime.pipeline.admit(account, request, source="seed000", request_id=request_id)
    view = await runtime.pipeline.wait(result.generation.id, runtime.settings.sync_timeout_s)
    if view.status == Status.SUCCEEDED and view.images:
        image = view.images[0]
        timings = view.timings()
        return JSONResponse(
            {
                "success": True,
                "image_url": image.url,
                "r2_path": image.key,
                "metadata": {
                    "provider": view.provider,
                    "model": view.model,
                    "dimensions": f"{image.width}x{image.height}",
                    "format": image.format,
                    "generation_time_ms": timings["total_ms"],
                    **(
                        {"requested_model": body.model, "substituted": route.substituted}
                        if route.substituted
                        else {}
                    ),
                },
                "generation_id": view.id,
                "request_id": request_id,
                "timestamp": iso(view.completed_at),
            }
        )
    if not view.terminal:
        body_ = error_body(
            "seed000",
            "timeout",
            f"generation did not finish within "
            f"{runtime.settings.sync_timeout_s:g} s; it carries on as "
            f"{view.id}",
            request_id,
        )
        body_["generation_id"] = view.id
        return JSONResponse(
            body_, status_code=504, headers={"Location": f"/v1/generations/{view.id}"}
        )
    code = view.error_code or "provider_error"
    body_ = error_body("seed000", code, view.error_message or "generation failed", request_id)
    body_["generation_id"] = view.id
    return JSONResponse(body_, status_code=CODE_STATUS.get(code, 502))
