"""The garbage collector collects rarely while the ``pixelgate`` program starts and is tuned
for serving once ``pixelgate serve`` is up."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from pixelgate.cli import _graceful_server_class, app
from pixelgate.gc_tuning import (
    DEFAULT_THRESHOLDS,
    OLDER_THRESHOLD,
    START_YOUNG_THRESHOLD,
    WORKER_MIDDLE_THRESHOLD,
    YOUNG_THRESHOLD,
    tune_for_server,
)

QUIET = (START_YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)


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


def test_the_worker_collects_its_middle_generation_less_often(restored_gc: None) -> None:
    """Its thousands of in-flight jobs survive the young collections: each middle one
    walked them all again (130-150 ms); five times fewer of them."""
    gc.unfreeze()
    tune_for_server(middle=WORKER_MIDDLE_THRESHOLD)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, WORKER_MIDDLE_THRESHOLD, OLDER_THRESHOLD)
    assert WORKER_MIDDLE_THRESHOLD >= 5 * OLDER_THRESHOLD


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


def _thresholds_after_importing_the_cli(argv0: str | None) -> tuple[int, int, int]:
    script = "import gc, sys\n"
    if argv0 is not None:
        script += f"sys.argv[0] = {argv0!r}\n"
    script += "import pixelgate.cli\nprint(*gc.get_threshold())"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    young, middle, old = (int(n) for n in done.stdout.split())
    return young, middle, old


@pytest.mark.parametrize("argv0", ["/opt/venv/bin/pixelgate", "/src/pixelgate/__main__.py"])
def test_the_pixelgate_program_starts_with_a_quiet_collector(argv0: str) -> None:
    assert _thresholds_after_importing_the_cli(argv0) == QUIET


def test_an_application_importing_the_cli_keeps_its_thresholds() -> None:
    assert _thresholds_after_importing_the_cli(None) == gc.get_threshold()


@pytest.mark.parametrize(("command", "after"), [("keys", DEFAULT_THRESHOLDS), ("serve", QUIET)])
def test_only_serving_commands_keep_the_quiet_collector_until_they_are_up(
    restored_gc: None, command: str, after: tuple[int, int, int]
) -> None:
    gc.set_threshold(*QUIET)
    result = CliRunner().invoke(app, [command, "--no-such-flag"])
    assert result.exit_code == 2  # the root callback ran, then the flag was refused
    assert gc.get_threshold() == after


_START_SCRIPT = """
import asyncio, gc, sys
sys.argv[0] = "/opt/venv/bin/pixelgate"
import pixelgate.cli
young = gc.get_stats()[0]["collections"]
from pixelgate.api.app import create_app
from pixelgate.config import load_settings
from pixelgate.runtime import Runtime
settings = load_settings(data_dir=sys.argv[1])

async def start():
    runtime = await Runtime.open(settings)
    create_app(settings, runtime=runtime)
    await runtime.start_worker()
    await runtime.close()

asyncio.run(start())
print(gc.get_stats()[0]["collections"] - young)
"""


def test_a_start_runs_no_collection_before_the_freeze(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    done = subprocess.run(
        [sys.executable, "-c", _START_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "0"
