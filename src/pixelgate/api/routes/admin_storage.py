"""``GET /admin/storage`` (seed 001): how many objects and bytes the image store holds."""

from __future__ import annotations

from fastapi import APIRouter

from pixelgate.api.deps import AdminCaller, RuntimeDep
from pixelgate.api.responses import JSONResponse

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/storage")
async def storage_stats(runtime: RuntimeDep, _admin: AdminCaller) -> JSONResponse:
    """Objects and bytes under the configured storage root (a full listing: admin only)."""
    storage = runtime.storage
    stats = await storage.stats()
    body: dict[str, object] = {
        "backend": stats.backend,
        "objects": stats.objects,
        "bytes": stats.bytes,
        "megabytes": round(stats.bytes / 1_000_000, 3),
        "prefix": runtime.settings.storage_prefix,
    }
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:
        body["bucket"] = bucket
        body["root"] = getattr(storage, "prefix", "")
        body["urls"] = (
            "cdn"
            if runtime.settings.public_url
            else ("gateway" if runtime.settings.s3_url_mode == "gateway" else "presigned")
        )
        body["presign_ttl_s"] = runtime.settings.presign_ttl_s
    return JSONResponse(body)
