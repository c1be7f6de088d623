"""``GET /admin/alerts``: alerts firing now and the recent history (seed 001)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from pixelgate.api.deps import AdminCaller, RuntimeDep
from pixelgate.api.responses import JSONResponse

router = APIRouter(tags=["admin"])

MAX_HISTORY = 500


@router.get("/admin/alerts")
async def get_alerts(
    runtime: RuntimeDep,
    _admin: AdminCaller,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 100,
) -> JSONResponse:
    """``active``: firing alerts; ``history``: the newest ``limit`` alerts, resolved or not;
    ``rules``: the thresholds in force (``routing.alerts`` of the hot configuration)."""
    alerts = runtime.alerts
    rules = await alerts.settings()
    return JSONResponse(
        {
            "active": await alerts.active(),
            "history": await alerts.history(limit),
            "rules": rules.model_dump(mode="json", exclude={"webhook_url", "email"}),
        }
    )
