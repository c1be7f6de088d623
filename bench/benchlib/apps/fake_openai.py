"""A fake of OpenAI's image API for benchmarking gateways (loopback only).

``POST /v1/images/generations`` -> ``{"created", "data": [{"b64_json", "revised_prompt"}]}``
with a fixed 64x64 PNG made once at start; ``--latency-ms`` adds an ``asyncio.sleep``
(no CPU) before answering. ``GET /health`` -> 200. Starlette on uvicorn, one process:
it parses the JSON body like a real provider would. ``GET /timeline`` -> the wall-clock
times (``time.time()``) at which each request since the last call arrived and was
answered, ``{"arrived": [...], "answered": [...]}``; the call clears them.

    python fake_openai.py --port 18501 --latency-ms 2000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import time
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LATENCY_S = 0.0
#: wall-clock times of the requests since the last GET /timeline (bounded: a long closed
#: loop keeps only the first MAX_TIMES)
MAX_TIMES = 100_000
ARRIVED: list[float] = []
ANSWERED: list[float] = []


def _note(times: list[float]) -> None:
    if len(times) < MAX_TIMES:
        times.append(time.time())


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 20)).save(buf, format="PNG")
    return buf.getvalue()


PNG_B64 = base64.b64encode(_png()).decode("ascii")


async def generations(request: Request) -> Response:
    _note(ARRIVED)
    try:
        body: dict[str, Any] = await request.json()
    except ValueError:
        return JSONResponse({"error": {"message": "invalid json"}}, status_code=400)
    if LATENCY_S > 0:
        await asyncio.sleep(LATENCY_S)
    item = {"b64_json": PNG_B64, "revised_prompt": str(body.get("prompt", ""))}
    payload = {"created": int(time.time()), "data": [item] * int(body.get("n") or 1)}
    _note(ANSWERED)
    return Response(json.dumps(payload), media_type="application/json")


async def health(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def timeline(request: Request) -> Response:
    out = {"arrived": list(ARRIVED), "answered": list(ANSWERED)}
    ARRIVED.clear()
    ANSWERED.clear()
    return JSONResponse(out)


app = Starlette(routes=[
    Route("/v1/images/generations", generations, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/timeline", timeline, methods=["GET"]),
])


def main() -> None:
    global LATENCY_S
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency-ms", type=float, default=0.0)
    a = p.parse_args()
    LATENCY_S = a.latency_ms / 1000
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False,
                backlog=4096)


if __name__ == "__main__":
    main()
