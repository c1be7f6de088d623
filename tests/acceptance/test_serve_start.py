"""``pixelgate serve`` opens its runtime once: the start-up checks (migrations, the admin
key, the dependencies) and the server share one event loop and one runtime, rather than a
runtime for the checks, closed, and a second one for the app (docs/benchmarks.md, sixth
round)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import ADMIN_KEY, base_env, free_port

_SCRIPT = """
import os, signal, sys, threading, time, urllib.request
from pixelgate import runtime

opened = []
_open = runtime.Runtime.open.__func__

async def counted_open(cls, *args, **kwargs):
    opened.append(kwargs)
    return await _open(cls, *args, **kwargs)

runtime.Runtime.open = classmethod(counted_open)
port = sys.argv[1]
healthy = []

def stop_once_healthy():
    for _ in range(3000):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                healthy.append(r.status)
                break
        except OSError:
            time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=stop_once_healthy, daemon=True).start()
sys.argv = ["pixelgate", "serve", "--host", "127.0.0.1", "--port", port]
from pixelgate.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print("RESULT", code, healthy, len(opened))
"""


def test_serve_opens_one_runtime_for_its_checks_and_its_app(tmp_path: Path) -> None:
    env = {
        **base_env(),
        "PIXELGATE_DATA_DIR": str(tmp_path / "data"),
        "PIXELGATE_ADMIN_KEY": ADMIN_KEY,
    }
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "RESULT 0 [200] 1", done.stderr[-2000:]
    assert "pixelgate listening on" in done.stderr


def test_a_taken_metrics_port_stops_serve_with_one_line_before_listening(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        env = {
            **base_env(),
            "PIXELGATE_DATA_DIR": str(tmp_path / "data"),
            "PIXELGATE_ADMIN_KEY": ADMIN_KEY,
            "PIXELGATE_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        }
        done = subprocess.run(
            [sys.executable, "-m", "pixelgate", "serve", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"error: config error: metrics_bind: cannot listen on 127.0.0.1:{metrics_port}" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert "listening on" not in done.stderr
