"""``GET /metrics``: Prometheus exposition of this process (admin key).

Without a key, on its own address, with ``metrics_bind`` (see
:mod:`pixelgate.observability.server`).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from pixelgate.api.deps import AdminCaller, RuntimeDep
from pixelgate.observability.collector import CONTENT_TYPE, exposition

router = APIRouter(tags=["admin"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(runtime: RuntimeDep, _admin: AdminCaller) -> Response:
    """This process's metrics; scrape every API and worker process."""
    return Response(await exposition(runtime), media_type=CONTENT_TYPE)
