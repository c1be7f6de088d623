"""``GET /health`` (seed 000's shape, plus the checks behind it) and ``GET /health/live``.

``/health`` is readiness: the database, the storage, the queue engine and — in a
scale-out deployment — Redis, each checked with a short timeout; 503 and
``"degraded"`` when one is down. ``/health/live`` only says the process answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from pixelgate.api.deps import RuntimeDep
from pixelgate.runtime import Runtime

router = APIRouter(tags=["health"])
STORAGE_PROBE_KEY = "health/probe"
CHECK_TIMEOUT_S = 3.0


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    names = ["database", "storage", "queue"]
    probes: list[Callable[[Runtime], Awaitable[dict[str, Any]]]] = [
        _database,
        _storage,
        _queue,
    ]
    if runtime.settings.redis_url:
        names.append("redis")
        probes.append(_redis)
    results = await asyncio.gather(*(_checked(probe, runtime) for probe in probes))
    checks = dict(zip(names, results, strict=True))
    healthy = all(c["status"] == "ok" for c in checks.values())
    return JSONResponse(
        {"status": "healthy" if healthy else "degraded", "service": "image-gen", "checks": checks},
        status_code=200 if healthy else 503,
    )


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


async def _checked(
    probe: Callable[[Runtime], Awaitable[dict[str, Any]]], runtime: Runtime
) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await probe(runtime)
    except Exception as exc:
        return {"status": "down", "error": type(exc).__name__}


async def _database(runtime: Runtime) -> dict[str, Any]:
    await runtime.db.run(lambda c: c.execute(text("SELECT 1")))
    return {"status": "ok", "backend": runtime.db.dialect}


async def _storage(runtime: Runtime) -> dict[str, Any]:
    await runtime.storage.exists(STORAGE_PROBE_KEY)
    return {"status": "ok", "backend": runtime.storage.backend}


async def _queue(runtime: Runtime) -> dict[str, Any]:
    body = await runtime.queue.health()
    worker = runtime.worker
    body["worker"] = "running" if worker else "disabled"
    body["in_flight"] = worker.in_flight if worker else 0
    return body


async def _redis(runtime: Runtime) -> dict[str, Any]:
    ping = getattr(runtime.bus, "ping", None)
    if ping is None:
        return {"status": "ok", "used_for": "nothing (in-process bus)"}
    await ping()
    return {"status": "ok"}
