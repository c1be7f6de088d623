"""Seed 001 (Images Generation Worker): ``POST /images/generate`` with a graceful default image."""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from pixelgate.api.compat._common import drop_none, resolve_instance
from pixelgate.api.deps import CurrentCaller, RequestId, RuntimeDep
from pixelgate.api.responses import JSONResponse
from pixelgate.core.materialize import render_default_image
from pixelgate.core.models import GenerationRequest, Status
from pixelgate.runtime import Runtime

router = APIRouter(tags=["seed 001"])

DEFAULT_WIDTH = 1024
DEFAULT_HEIGHT = 768


class Seed001Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1)
    keyword: str | None = None
    articleId: str | None = None
    width: int | None = Field(None, ge=16)
    height: int | None = Field(None, ge=16)
    style: str | None = None
    provider: str | None = None
    providers: list[str] | None = None
    instance_id: str | None = None
    project_id: str | None = None


async def default_image_url(runtime: Runtime, width: int, height: int) -> str:
    """The placeholder "Default Image" of the size asked, rendered and stored once."""
    key = f"{runtime.settings.storage_prefix or 'ai'}/default/{width}x{height}.png"
    if not await runtime.storage.exists(key):
        data = await render_default_image(width, height)
        await runtime.storage.put(key, data, "image/png")
    return runtime.storage.url(key, runtime.settings.base_url())


@router.post("/images/generate")
async def generate_image(
    body: Seed001Request, runtime: RuntimeDep, caller: CurrentCaller, request_id: RequestId
) -> JSONResponse:
    started = time.monotonic()
    account = await resolve_instance(runtime, caller, body.instance_id)
    width = body.width or DEFAULT_WIDTH
    height = body.height or DEFAULT_HEIGHT
    request = GenerationRequest.model_validate(
        drop_none(
            {
                "prompt": body.prompt,
                "width": width,
                "height": height,
                "style": body.style,
                "provider": body.provider,
                "providers": body.providers,
                "format": "webp",
                "project": body.project_id or "default",
                "metadata": drop_none({"keyword": body.keyword, "articleId": body.articleId}),
            }
        )
    )
    result = await runtime.pipeline.admit(account, request, source="seed001", request_id=request_id)
    view = await runtime.pipeline.wait(result.generation.id, runtime.settings.sync_timeout_s)
    elapsed = int((time.monotonic() - started) * 1000)
    if view.status == Status.SUCCEEDED and view.images:
        return JSONResponse(
            {
                "url": view.images[0].url,
                "provider": view.provider,
                "elapsedMs": elapsed,
                "success": True,
                "generationId": view.id,
                "requestId": request_id,
            }
        )
    if view.terminal:
        error = f"All providers failed: {view.error_message or view.error_code}"
    else:
        error = f"All providers failed: timeout (generation {view.id} carries on)"
    if not (await runtime.pipeline.control.current()).fallback_image:
        return JSONResponse(
            {
                "url": None,
                "provider": None,
                "elapsedMs": elapsed,
                "success": False,
                "error": error,
                "generationId": view.id,
                "requestId": request_id,
            },
            status_code=502,
        )
    return JSONResponse(
        {
            "url": await default_image_url(runtime, width, height),
            "provider": "default",
            "elapsedMs": elapsed,
            "success": False,
            "error": error,
            "generationId": view.id,
            "requestId": request_id,
        }
    )
