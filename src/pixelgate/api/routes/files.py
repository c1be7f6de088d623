"""``GET /files/{key}``: stored images with their content type and immutable caching."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from pixelgate.api.deps import RuntimeDep
from pixelgate.errors import NotFound, StorageError
from pixelgate.storage.base import CACHE_CONTROL

router = APIRouter(tags=["files"])


@router.get("/files/{key:path}")
async def get_file(key: str, runtime: RuntimeDep) -> Response:
    try:
        obj = await runtime.storage.get(key)
    except StorageError:
        raise NotFound("file not found") from None
    return Response(
        obj.data,
        media_type=obj.content_type,
        headers={"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
    )
