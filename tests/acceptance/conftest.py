"""Black-box acceptance fixtures: real ``pixelgate`` processes on loopback ports.

Every server and CLI command here is a separate process started with a clean environment
(none of the test runner's ``PIXELGATE_*`` variables or provider keys leak in). Servers are
always killed at teardown, also when a test fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ADMIN_KEY = "pg_acceptance_admin_key_0123456789abcdef"
PROVIDER_KEY_VARS = (
    "OPENAI_API_KEY", "GEMINI_API_KEY", "STABILITY_API_KEY", "REPLICATE_API_TOKEN",
    "FAL_KEY", "IDEOGRAM_API_KEY", "UNSPLASH_ACCESS_KEY", "GOOGLE_API_KEY",
    "AI_HORDE_API_KEY", "HORDE_API_KEY",
)
STARTUP_TIMEOUT_S = 25.0
CLI_TIMEOUT_S = 60.0
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    """The runner's environment minus everything that could configure pixelgate."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("PIXELGATE_") and k not in PROVIDER_KEY_VARS
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def placeholder_config(latency_ms: int = 0, name: str = "fast", **extra: Any) -> str:
    lines = [f"[providers.{name}]", 'kind = "placeholder"', f"latency_ms = {latency_ms}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines += ["", "[routing]", f'default = ["{name}"]', ""]
    return "\n".join(lines)


@dataclass
class Server:
    """One running ``pixelgate serve`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    env: dict[str, str]
    args: list[str]
    log_dir: Path
    admin_key: str | None
    stdout_path: Path
    stderr_path: Path
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def client(self, key: str | None = "admin", **kwargs: Any) -> httpx.Client:
        """An httpx client on this server; ``key="admin"`` means the admin key."""
        headers = dict(kwargs.pop("headers", {}))
        token = self.admin_key if key == "admin" else key
        if token:
            headers["Authorization"] = f"Bearer {token}"
        c = httpx.Client(base_url=self.base_url, headers=headers,
                         timeout=kwargs.pop("timeout", 30.0), **kwargs)
        self.clients.append(c)
        return c

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last: str = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"pixelgate serve exited with {self.proc.returncode} before answering "
                    f"/health\n--- stderr ---\n{self.stderr()[-5000:]}"
                )
            try:
                r = httpx.get(f"{self.base_url}/health", timeout=2.0)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.05)
        pytest.fail(
            f"pixelgate serve did not answer /health within {timeout} s (last: {last})\n"
            f"--- stderr ---\n{self.stderr()[-5000:]}"
        )

    def close_clients(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()

    def signal(self, sig: int) -> None:
        self.close_clients()
        if self.alive():
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it."""
        self.close_clients()
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=10)


ServerFactory = Callable[..., Server]


class Launcher:
    """Starts ``pixelgate serve`` processes under ``root`` and kills them all on close."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[Server] = []
        self.counter = 0

    def start(
        self,
        *,
        config: str | None = None,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: Sequence[str] = (),
        admin_key: str | None = ADMIN_KEY,
        wait: bool = True,
    ) -> Server:
        """``config`` is the TOML text (written to a file) or None for no config file;
        ``admin_key=None`` starts without ``PIXELGATE_ADMIN_KEY``."""
        self.counter += 1
        n = self.counter
        data_dir = data_dir or self.root / "data"
        child_env = base_env()
        child_env.update({
            "PIXELGATE_DATA_DIR": str(data_dir),
            "PIXELGATE_POLL_INTERVAL_S": "0.2",
            "PIXELGATE_LOG_LEVEL": "info",
        })
        if admin_key is not None:
            child_env["PIXELGATE_ADMIN_KEY"] = admin_key
        if config is not None:
            cfg = self.root / f"pixelgate-{n}.toml"
            cfg.write_text(config)
            child_env["PIXELGATE_CONFIG"] = str(cfg)
        child_env.update(env or {})
        port = port or free_port()
        argv = [sys.executable, "-m", "pixelgate", "serve", "--host", "127.0.0.1",
                "--port", str(port), *args]
        stdout_path = self.root / f"server-{n}.out"
        stderr_path = self.root / f"server-{n}.err"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            proc = subprocess.Popen(argv, env=child_env, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, cwd=self.root)
        server = Server(proc=proc, port=port, data_dir=data_dir, env=child_env, args=list(args),
                        log_dir=self.root, admin_key=admin_key, stdout_path=stdout_path,
                        stderr_path=stderr_path)
        self.servers.append(server)
        if wait:
            server.wait_healthy()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close_clients()
            if server.alive():
                server.proc.send_signal(signal.SIGKILL)
            # a process SIGKILL cannot reap within 10 s is the kernel's problem, not the
            # test's: teardown goes on to the next server
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=10)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """``start_server(config=..., data_dir=..., env=..., port=..., args=...)`` → :class:`Server`;
    every server started is killed at teardown."""
    launcher = Launcher(tmp_path)
    try:
        yield launcher.start
    finally:
        launcher.close()


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """A launcher whose servers live for a whole test module (read-mostly tests)."""
    launcher = Launcher(tmp_path_factory.mktemp("pixelgate-module"))
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``pixelgate ARGS`` to completion with a clean environment plus ``env``."""

    def run(args: Sequence[str], *, env: dict[str, str], check: bool = False,
            timeout: float = CLI_TIMEOUT_S, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        child_env = base_env()
        child_env.update(env)
        result = subprocess.run(
            [sys.executable, "-m", "pixelgate", *args], env=child_env, capture_output=True,
            text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd or tmp_path,
        )
        if check and result.returncode != 0:
            pytest.fail(f"pixelgate {' '.join(args)} exited {result.returncode}\n"
                        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")
        return result

    return run


# --- helpers used by several modules ------------------------------------------------------


def parse_sse(lines: Iterator[str], stop: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Parse server-sent events (``id:``/``event:``/``data:`` lines) until ``stop(event)``."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    data_lines: list[str] = []
    for line in lines:
        if line == "":
            if current or data_lines:
                if data_lines:
                    current["data"] = json.loads("\n".join(data_lines))
                current.setdefault("event", "message")
                events.append(current)
                if stop(current):
                    return events
            current, data_lines = {}, []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive ping
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data_lines.append(value)
        elif name in ("id", "event", "retry"):
            current[name] = value
    return events


def stream_events(client: httpx.Client, gen_id: str, *, last_event_id: str | None = None,
                  timeout: float = 30.0) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """All events of ``gen_id`` (after ``last_event_id``) up to a terminal one."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    with client.stream("GET", f"/v1/generations/{gen_id}/events", headers=headers,
                       timeout=httpx.Timeout(timeout, read=timeout)) as response:
        assert response.status_code == 200, response.read().decode(errors="replace")
        events = parse_sse(
            response.iter_lines(),
            stop=lambda e: e.get("event") in ("succeeded", "failed", "canceled"),
        )
    return response, events


def wait_all_terminal(client: httpx.Client, ids: Sequence[str], timeout: float,
                      server: Server | None = None) -> dict[str, dict[str, Any]]:
    """Poll each generation until all are terminal; fail with their states on timeout."""
    deadline = time.monotonic() + timeout
    bodies: dict[str, dict[str, Any]] = {}
    while True:
        for gen_id in ids:
            if gen_id in bodies and bodies[gen_id]["status"] in TERMINAL:
                continue
            r = client.get(f"/v1/generations/{gen_id}")
            assert r.status_code == 200, r.text
            bodies[gen_id] = r.json()
        if all(b["status"] in TERMINAL for b in bodies.values()):
            return bodies
        if time.monotonic() > deadline:
            states = {k: v["status"] for k, v in bodies.items()}
            extra = f"\n--- server stderr ---\n{server.stderr()[-4000:]}" if server else ""
            pytest.fail(f"not all generations finished within {timeout} s: {states}{extra}")
        time.sleep(0.2)


def statuses(client: httpx.Client, ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for gen_id in ids:
        r = client.get(f"/v1/generations/{gen_id}")
        assert r.status_code == 200, r.text
        out[gen_id] = r.json()["status"]
    return out


def wait_processing(client: httpx.Client, ids: Sequence[str], *, at_least: int,
                    timeout: float = 10.0, strict: bool = True) -> set[str]:
    """Wait until ``at_least`` of ``ids`` are PROCESSING; returns the PROCESSING ones.

    With ``strict=False`` a timeout returns what is PROCESSING by then instead of failing.
    """
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    while True:
        r = client.get("/v1/generations", params={"status": "PROCESSING", "limit": 100})
        assert r.status_code == 200, r.text
        running = {g["id"] for g in r.json()["data"]} & wanted
        if len(running) >= at_least:
            return running
        if time.monotonic() > deadline:
            if not strict:
                return running
            pytest.fail(f"only {len(running)} of {len(ids)} PROCESSING after {timeout} s "
                        f"(wanted {at_least}): {statuses(client, ids)}")
        time.sleep(0.05)


def image_files(images_root: Path) -> list[Path]:
    """Stored image files, without in-flight temporary files (``.tmp-*``)."""
    if not images_root.exists():
        return []
    return sorted(
        p for p in images_root.rglob("*")
        if p.is_file() and not p.name.startswith((".tmp", "tmp")) and not p.name.endswith(".tmp")
    )
