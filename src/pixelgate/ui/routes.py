"""The UI's router: its pages, the operator's page and the packaged static files."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from pixelgate.errors import NotFound
from pixelgate.ui import admin, pages

__all__ = ["router"]

STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
STATIC_CACHE = "public, max-age=3600"

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(admin.router)


@router.get("/ui/static/{name}")
async def static(name: str) -> Response:
    """A packaged asset (no CDN: the UI works offline)."""
    kind = STATIC_TYPES.get(name[name.rfind(".") :]) if "." in name else None
    asset = files("pixelgate.ui").joinpath("static", name)
    if kind is None or "/" in name or name.startswith(".") or not asset.is_file():
        raise NotFound("file not found")
    return Response(
        asset.read_bytes(),
        media_type=kind,
        headers={"Cache-Control": STATIC_CACHE, "X-Content-Type-Options": "nosniff"},
    )
