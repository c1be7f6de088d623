"""``GET /files/{key}``: stored images with their content type and immutable caching.

On local storage the bytes are served from here. On S3-compatible storage the answer
is a 307 to the object's CDN URL or a freshly presigned URL, so image traffic never
flows through the gateway.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from pixelgate.api.deps import RuntimeDep
from pixelgate.errors import NotFound, StorageError
from pixelgate.storage.base import CACHE_CONTROL

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
    try:
        obj = await storage.get(key)
    except StorageError:
        raise NotFound("file not found") from None
    headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    if obj.content_type == "image/svg+xml":
        # sanitised at store time; opened directly, it still may run nothing and load nothing
        headers["Content-Security-Policy"] = SVG_CSP
    return Response(obj.data, media_type=obj.content_type, headers=headers)
