"""A bare forwarding proxy: the ceiling for one Python hop (Starlette + pooled aiohttp).

No auth, no routing table, no storage. ``POST /v1/images/generations``: parse the JSON,
forward it to ``--upstream``, parse the reply, return it. ``GET /health`` -> 200.

    python min_proxy.py --port 18503 --upstream http://127.0.0.1:18501
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = "http://127.0.0.1:18501"
session: aiohttp.ClientSession | None = None


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global session
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=600))
    yield
    await session.close()


async def generations(request: Request) -> Response:
    assert session is not None
    body = await request.json()
    payload = {"model": body.get("model", "gpt-image-1"), "prompt": body["prompt"],
               "n": body.get("n", 1), "size": body.get("size", "1024x1024")}
    async with session.post(f"{UPSTREAM}/v1/images/generations", json=payload,
                            headers={"Authorization": "Bearer sk-bench-dummy"}) as r:
        data = await r.json(content_type=None)
        return Response(json.dumps(data), status_code=r.status, media_type="application/json")


async def health(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(routes=[Route("/v1/images/generations", generations, methods=["POST"]),
                        Route("/health", health, methods=["GET"])], lifespan=lifespan)

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", default=UPSTREAM)
    a = p.parse_args()
    UPSTREAM = a.upstream.rstrip("/")
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False,
                backlog=4096)
