"""Servers the benchmarks start: subprocesses on loopback, stopped at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parents[1]
ROOT = BENCH_DIR.parent
APPS = Path(__file__).resolve().parent / "apps"
ADMIN_KEY = "pg_bench_admin_key_0123456789abcdef"

_handed_out: set[int] = set()


def port_range() -> range:
    """Ports the benchmarks may listen on: ``BENCH_PORTS`` (``lo-hi``), 18500-18599."""
    lo, _, hi = os.environ.get("BENCH_PORTS", "18500-18599").partition("-")
    return range(int(lo), int(hi or lo) + 1)


def free_port() -> int:
    """The next port of ``port_range()`` that this process has not handed out and that
    nobody listens on."""
    for port in port_range():
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {port_range()} (set BENCH_PORTS=lo-hi)")


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


@dataclass
class Server:
    """One server subprocess (its own session, so a stop reaches its children)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_s: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Server:
        self.log_fh = self.log_path.open("wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=self.log_fh, stderr=subprocess.STDOUT,
            cwd=str(self.log_path.parent), start_new_session=True,
        )
        return self

    def wait_ready(self, path: str, timeout: float, ok_below: int = 500) -> float:
        """Poll ``GET path`` until it answers below ``ok_below``; seconds since start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            status = http_status(self.url + path)
            if status is not None and status < ok_below:
                self.ready_s = time.monotonic() - self.started_at
                return self.ready_s
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready within {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_lines(self) -> int:
        try:
            return len(self.log_path.read_text(errors="replace").splitlines())
        except OSError:
            return 0

    def log_warnings(self) -> dict[str, int]:
        """Warning/error log events by name (``lease_lost``, ``job_crashed`` …)."""
        counts: dict[str, int] = {}
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return counts
        for line in text.splitlines():
            for level in ("[warning", "[error", "[critical"):
                if level in line:
                    event = line.split("]", 1)[1].split()[0] if "]" in line else "?"
                    counts[event] = counts.get(event, 0) + 1
        return counts

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.log_fh.close()


class Servers:
    """Context manager that stops every server it started, last first."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def add(self, server: Server) -> Server:
        self.started.append(server)
        return server.start()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in reversed(self.started):
            try:
                server.stop()
            except Exception:  # best effort: never leave one running
                if server.proc is not None and server.proc.poll() is None:
                    server.proc.kill()


# --- pixelgate ------------------------------------------------------------------------


def gateway_env(work: Path, name: str, config: Path, *, concurrency: int | None = None,
                log_level: str = "warning", pythonpath: str | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for ``pixelgate serve``: only the settings below (no
    ``PIXELGATE_*`` of the caller), a throw-away data dir, the bench admin key."""
    data = work / f"{name}-data"
    data.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    # an installed gateway starts from compiled bytecode; with this set (as some shells
    # and CI images do) every start would compile pixelgate's modules again (~0.2 s)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update({
        "PIXELGATE_DATA_DIR": str(data),
        "PIXELGATE_ADMIN_KEY": ADMIN_KEY,
        "PIXELGATE_CONFIG": str(config),
        "PIXELGATE_LOG_LEVEL": log_level,
        "PYTHONUNBUFFERED": "1",
    })
    if concurrency is not None:
        env["PIXELGATE_CONCURRENCY"] = str(concurrency)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env.update(extra or {})
    return env


def gateway(work: Path, name: str, config: Path, *, python: str = sys.executable,
            concurrency: int | None = None, log_level: str = "warning",
            pythonpath: str | None = None, extra: dict[str, str] | None = None) -> Server:
    """``python -m pixelgate serve`` on a bench port (not started)."""
    port = free_port()
    env = gateway_env(work, name, config, concurrency=concurrency, log_level=log_level,
                      pythonpath=pythonpath, extra=extra)
    argv = [python, "-m", "pixelgate", "serve", "--host", LOOPBACK, "--port", str(port)]
    return Server(name, argv, env, port, work / f"{name}.log")


def gateway_config(work: Path, *, upstream: str | None = None, fast_ms: int = 0,
                   slow_ms: int = 2000, default: str = "fast") -> Path:
    """A TOML config: placeholder instances ``fast`` (``fast_ms``) and ``slow``
    (``slow_ms``); with ``upstream`` also an ``openai`` instance whose ``base_url`` is
    that fake OpenAI API (what the OpenAI-compatible route then uses)."""
    text = ("# written by bench/benchlib/servers.py\n"
            f'[providers.fast]\nkind = "placeholder"\nlatency_ms = {fast_ms}\n\n'
            f'[providers.slow]\nkind = "placeholder"\nlatency_ms = {slow_ms}\n\n')
    if upstream:
        text += (f'[providers.openai]\nkind = "openai"\nbase_url = "{upstream}/v1"\n'
                 'api_key = "sk-bench-dummy"\ntimeout_s = 600\n\n')
    text += f'[routing]\ndefault = ["{default}"]\n'
    path = work / f"pixelgate-{default}.toml"
    path.write_text(text)
    return path


# --- the other servers ----------------------------------------------------------------


def app_server(work: Path, name: str, script: str, *args: str,
               python: str = sys.executable) -> Server:
    """One of ``benchlib/apps/*.py`` (fake upstream, bare proxy, bare ASGI) on a port."""
    port = free_port()
    argv = [python, str(APPS / script), "--port", str(port), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return Server(name, argv, env, port, work / f"{name}.log")


LITELLM_KEY = "sk-bench-litellm-4f6c2a9e8b7d1c3f5a0e9d8c7b6a5f4e"
LITELLM_CONFIG = """\
# written by bench/benchlib/servers.py: route gpt-image-1 to the fake OpenAI API
model_list:
  - model_name: gpt-image-1
    litellm_params:
      model: openai/gpt-image-1
      api_base: {upstream}/v1
      api_key: sk-bench-dummy
    model_info:
      mode: image_generation
litellm_settings:
  drop_params: true
  set_verbose: false
  json_logs: false
general_settings:
  disable_spend_logs: true
"""


def litellm(work: Path, upstream: str, venv: Path) -> Server:
    """The LiteLLM proxy, 1 worker, master key set, no database, from its own venv."""
    config = work / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(upstream=upstream))
    port = free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "WARNING", "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", LOOPBACK,
            "--port", str(port), "--num_workers", "1"]
    return Server("litellm", argv, env, port, work / "litellm.log")


LITELLM_HEALTH = "/health/liveliness"


def litellm_venv(venv: Path, install: bool = True) -> Path | None:
    """The LiteLLM venv, installed from ``bench/requirements-litellm.txt`` on first use
    when ``install``; None, with a ``LiteLLM SKIPPED`` message, when it is unavailable."""
    if (venv / "bin" / "litellm").exists():
        return venv
    if not install:
        print(f"LiteLLM SKIPPED: {venv}/bin/litellm not found (--no-install given)",
              file=sys.stderr)
        return None
    req = BENCH_DIR / "requirements-litellm.txt"
    print(f"... installing LiteLLM ({req.name}) into {venv} (once, a few minutes)",
          file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(req)],
                       check=True, timeout=1200)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"LiteLLM SKIPPED: could not install it into {venv} ({exc}); the other "
              "targets still run", file=sys.stderr)
        return None
    return venv


def export_ref(ref: str, work: Path, name: str = "src-export") -> str:
    """``git archive`` a committed tree (read-only for the repository) into ``work/name``;
    returns its src."""
    target = work / name
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return str(target / "src")
