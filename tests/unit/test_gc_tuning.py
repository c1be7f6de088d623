"""The garbage collector is tuned for serving once ``pixelgate serve`` is up."""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from pixelgate.cli import _graceful_server_class
from pixelgate.gc_tuning import OLDER_THRESHOLD, YOUNG_THRESHOLD, tune_for_server


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tuning_freezes_start_up_objects_and_collects_less_often(restored_gc: None) -> None:
    gc.unfreeze()
    tune_for_server()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app: every request is answered 404 (none is sent here)."""
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_the_serve_server_tunes_the_collector_once_started(restored_gc: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(_app, lifespan="off", log_config=None, log_level="warning")
    config.load()
    server = _graceful_server_class()(config)
    server.lifespan = config.lifespan_class(config)  # as uvicorn's Server._serve does
    await server.startup(sockets=[sock])
    try:
        assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
        assert gc.get_freeze_count() > 0
    finally:
        await server.shutdown(sockets=[sock])
        sock.close()
