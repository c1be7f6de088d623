"""``GET /health`` (seed 000's shape, plus the checks behind it) and ``GET /health/live``.

``/health`` is readiness: the database, the storage, the queue engine and — in a
scale-out deployment — Redis, each checked with a short timeout; 503 and
``"degraded"`` when one is down, with a one-line ``reason`` for each that is
(:mod:`pixelgate.probes`). ``/health/live`` only says the process answers.
"""

from __future__ import annotations

import time

from fastapi import APIRouter

from pixelgate.api.deps import RuntimeDep
from pixelgate.api.responses import JSONResponse
from pixelgate.probes import check_all

router = APIRouter(tags=["health"])

#: when the app's routes were declared (this module is imported with them, at start):
#: ``/admin/status`` counts its ``uptime_s`` from here, its own module being lazy
STARTED_AT = time.monotonic()


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    checks = await check_all(runtime)
    healthy = all(c["status"] == "ok" for c in checks.values())
    return JSONResponse(
        {"status": "healthy" if healthy else "degraded", "service": "image-gen", "checks": checks},
        status_code=200 if healthy else 503,
    )


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}
