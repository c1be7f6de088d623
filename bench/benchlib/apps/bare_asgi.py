"""Bare baseline: a plain ASGI function (no framework) answering every request with the
same bytes from memory. ``BENCH_BARE_BODY`` (a file) and ``BENCH_BARE_STATUS`` set them;
``GET /health`` answers 200.

    python bare_asgi.py --port 18510 [--status 202] [--body-file F]
    uvicorn --app-dir bench/benchlib/apps bare_asgi:app   # with BENCH_BARE_BODY set
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

_body_file = os.environ.get("BENCH_BARE_BODY")
BODY = Path(_body_file).read_bytes() if _body_file else b'{"id":"bare","status":"PENDING"}'
STATUS = int(os.environ.get("BENCH_BARE_STATUS", "200"))
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # read (and drop) the request body, as a real endpoint must
        message = await receive()
        more = message.get("more_body", False)
    status = 200 if scope["path"] == "/health" else STATUS
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    global BODY, STATUS, HEADERS
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--status", type=int, default=STATUS)
    p.add_argument("--body-file", default=None)
    a = p.parse_args()
    STATUS = a.status
    if a.body_file:
        BODY = Path(a.body_file).read_bytes()
        HEADERS = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(BODY)).encode())]
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False,
                backlog=4096)


if __name__ == "__main__":
    main()
