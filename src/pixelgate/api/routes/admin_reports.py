"""``GET /admin/stats`` (seed 001): generations, success, latency and spend per day."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from pixelgate.api.deps import AdminCaller, RuntimeDep
from pixelgate.api.responses import JSONResponse
from pixelgate.errors import ValidationFailed

router = APIRouter(prefix="/admin", tags=["admin"])

MAX_STATS_DAYS = 366
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


@router.get("/stats")
async def stats(
    runtime: RuntimeDep,
    _admin: AdminCaller,
    days: Annotated[int | None, Query(ge=1, le=MAX_STATS_DAYS)] = None,
    date_: Annotated[
        str | None, Query(alias="date", pattern=DATE_PATTERN, json_schema_extra={"format": "date"})
    ] = None,
) -> JSONResponse:
    if date_ is not None and days is not None:
        raise ValidationFailed("date", "give days or date, not both")
    if date_ is not None:
        try:
            first = last = date.fromisoformat(date_)
        except ValueError:
            raise ValidationFailed("date", "not a calendar date (YYYY-MM-DD)") from None
    else:
        first, last = runtime.services.last_days(days or 7)
    return JSONResponse(await runtime.services.stats(first_day=first, last_day=last))
