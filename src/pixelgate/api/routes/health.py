"""``GET /health`` (seed 000's shape, plus the checks behind it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from pixelgate.api.deps import RuntimeDep

router = APIRouter(tags=["health"])
STORAGE_PROBE_KEY = "health/probe"


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        async with runtime.db.read() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = {"status": "ok", "backend": runtime.db.dialect}
    except Exception as exc:
        checks["database"] = {"status": "down", "error": type(exc).__name__}
    try:
        await runtime.storage.exists(STORAGE_PROBE_KEY)
        checks["storage"] = {"status": "ok", "backend": runtime.storage.backend}
    except Exception as exc:
        checks["storage"] = {"status": "down", "error": type(exc).__name__}
    worker = runtime.worker
    checks["queue"] = {
        "status": "ok",
        "engine": "embedded",
        "worker": "running" if worker else "disabled",
        "in_flight": worker.in_flight if worker else 0,
    }
    healthy = all(c["status"] == "ok" for c in checks.values())
    return JSONResponse(
        {"status": "healthy" if healthy else "degraded", "service": "image-gen", "checks": checks},
        status_code=200 if healthy else 503,
    )
