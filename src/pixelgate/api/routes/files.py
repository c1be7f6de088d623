"""``GET /files/{key}``: stored images with their content type and immutable caching.

On local storage the bytes are served from here. On S3-compatible storage the answer
is a 307 to the object's CDN URL or a freshly presigned URL, so image traffic never
flows through the gateway.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from pixelgate.api.deps import RuntimeDep
from pixelgate.errors import NotFound, StorageError
from pixelgate.storage.base import CACHE_CONTROL
from pixelgate.storage.local import content_type_for

router = APIRouter(tags=["files"])
#: a redirect to a presigned URL must not outlive the signature
REDIRECT_CACHE_CONTROL = "private, max-age=60"
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


@router.get("/files/{key:path}")
async def get_file(key: str, runtime: RuntimeDep) -> Response:
    storage = runtime.storage
    direct_url = getattr(storage, "direct_url", None)
    if direct_url is not None:
        try:
            if not await storage.exists(key):
                raise NotFound("file not found")
            location = direct_url(key)
        except StorageError:
            raise NotFound("file not found") from None
        return RedirectResponse(
            location, status_code=307, headers={"Cache-Control": REDIRECT_CACHE_CONTROL}
        )
    path_for = getattr(storage, "path_for", None)
    if path_for is None:
        try:
            obj = await storage.get(key)
        except StorageError:
            raise NotFound("file not found") from None
        return Response(obj.data, media_type=obj.content_type, headers=_headers(obj.content_type))
    # local disk: streamed from the file in chunks, never loaded whole
    try:
        path = path_for(key)
        found = await asyncio.to_thread(path.is_file)
    except StorageError:
        raise NotFound("file not found") from None
    if not found:
        raise NotFound("file not found")
    media_type = content_type_for(key)
    return FileResponse(path, media_type=media_type, headers=_headers(media_type))


def _headers(content_type: str) -> dict[str, str]:
    headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    if content_type == "image/svg+xml":
        # sanitised at store time; opened directly, it still may run nothing and load nothing
        headers["Content-Security-Policy"] = SVG_CSP
    return headers
